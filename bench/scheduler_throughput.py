"""How many due scheduled tasks per second reach the outbound queue, with 1 and 2 scheduler workers.

    .venv/bin/python bench/scheduler_throughput.py [--tasks 10000] [--workers 1 2] [--http]

Creates a throwaway PostgreSQL database (admin URL: BENCH_POSTGRES_ADMIN_URL, default the local trust server),
inserts `--tasks` leads with one due `nudge_30m` each, and lets N worker processes (separate replicas, each its
own connection pool) drain the queue through the real claim path (`SELECT … FOR UPDATE SKIP LOCKED` + lease),
the fire-time re-check, and what a fired intent does: `tasks.message_for_fire` (the Rasa action) followed by
`outbound.enqueue` (the channel, including the policy gate) — one queued `messages` row per task.

Without `--http` the Rasa hop is in-process (measures our side: queue + DB + gate). With `--http` each trigger
goes over HTTP to a local fake of Rasa's trigger_intent endpoint that runs the same action path, adding the HTTP
round trip but not Rasa's own NLU/policy time. The printout compares with Twilio's default WhatsApp throughput of
80 messages per second (per sender).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leadbot.clock import now  # noqa: E402
from leadbot.config import settings  # noqa: E402
from leadbot.db import migrate  # noqa: E402
from leadbot.db.models import Contact, Conversation, Message, TaskScheduled  # noqa: E402
from leadbot.db.session import create_db_engine  # noqa: E402
from leadbot.domain.policy import Purpose  # noqa: E402
from leadbot.services import outbound, tasks  # noqa: E402

TWILIO_DEFAULT_MPS = 80
ADMIN_URL = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(sql: str) -> None:
    engine = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", future=True)
    with engine.connect() as connection:
        connection.execute(sa.text(sql))
    engine.dispose()


def act_like_rasa(engine: Any, task_id: int) -> None:
    """The action (`message_for_fire`) and the channel (`outbound.enqueue`) for one fired task."""
    with Session(engine, future=True, expire_on_commit=False) as session:
        message = tasks.message_for_fire(session, task_id)
        if message is not None:
            task = session.get(TaskScheduled, task_id)
            outbound.enqueue(
                session,
                session.get(Conversation, task.conversation_id),
                template_name=message.template,
                variables=message.variables,
                deadline=message.deadline,
                purpose=Purpose(message.purpose),
            )
        session.commit()


class InProcessRasa:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def trigger_intent(self, sender_id: str, intent: str, entities: dict[str, str]) -> dict[str, Any]:
        act_like_rasa(self.engine, int(entities["task_id"]))
        return {"tracker": {"sender_id": sender_id}}


def serve_fake_rasa(url: str, token: str) -> ThreadingHTTPServer:
    engine = create_db_engine(url)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Rasa's Sanic server does

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if f"token={token}" not in self.path:
                self._reply(401, {"status": "failure", "reason": "NotAuthenticated", "code": 401})
                return
            act_like_rasa(engine, int(body["entities"]["task_id"]))
            self._reply(200, {"tracker": {}})

        def _reply(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    class Server(ThreadingHTTPServer):
        # Sanic's listen backlog (100), not socketserver's 5: concurrent triggers would otherwise see resets.
        request_queue_size = 100

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def seed(url: str, count: int) -> None:
    engine = create_db_engine(url)
    at = now() - timedelta(seconds=1)
    with Session(engine, future=True) as session:
        contacts = [
            Contact(whatsapp_e164=f"+49151{i:08d}", first_name="Lena", timezone="Europe/Berlin",
                    consent_status="granted", consent_source="bench", created_at=at, updated_at=at)
            for i in range(count)
        ]
        session.add_all(contacts)
        session.flush()
        conversations = [Conversation(contact_id=c.id, created_at=at, updated_at=at) for c in contacts]
        session.add_all(conversations)
        session.flush()
        session.add_all(
            TaskScheduled(conversation_id=c.id, task_type="nudge_30m", run_at=at, status="pending", attempts=0,
                          created_at=at, updated_at=at)
            for c in conversations
        )
        session.commit()
    engine.dispose()


def worker(url: str, name: str, rasa_url: str | None, token: str, start: Any, out: Any) -> None:
    from scheduler.firing import Firer
    from scheduler.rasa_client import HttpRasaClient

    engine = create_db_engine(url)
    rasa = HttpRasaClient(rasa_url, token) if rasa_url else InProcessRasa(engine)
    firer = Firer(engine, rasa, name)
    start.wait()
    fired = 0
    while True:
        stats = firer.run_once()
        fired += stats.fired
        if stats.claimed == 0:
            break
    out.put((name, fired))
    engine.dispose()


def run(count: int, workers: int, http: bool) -> tuple[float, int, int]:
    name = f"leadbot_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    server = None
    try:
        migrate.upgrade(url)
        seed(url, count)
        token = "bench-token"
        os.environ["RASA_API_TOKEN"] = token
        if http:
            server = serve_fake_rasa(url, token)
        rasa_url = f"http://127.0.0.1:{server.server_address[1]}" if server else None
        context = multiprocessing.get_context("fork")
        start, out = context.Event(), context.Queue()
        processes = [
            context.Process(target=worker, args=(url, f"bench-w{i}", rasa_url, token, start, out))
            for i in range(workers)
        ]
        for process in processes:
            process.start()
        began = time.perf_counter()
        start.set()
        per_worker = dict(out.get() for _ in processes)
        elapsed = time.perf_counter() - began
        for process in processes:
            process.join()
        engine = create_db_engine(url)
        with engine.connect() as connection:
            queued = connection.execute(
                sa.select(sa.func.count()).select_from(Message).where(Message.delivery_status == "queued")
            ).scalar_one()
            doubles = connection.execute(
                sa.text("SELECT count(*) FROM (SELECT conversation_id FROM messages GROUP BY 1 HAVING count(*) > 1) d")
            ).scalar_one()
        engine.dispose()
        print(f"  per worker: {per_worker}; messages queued: {queued}; conversations with >1 message: {doubles}")
        return elapsed, queued, doubles
    finally:
        if server is not None:
            server.shutdown()
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        _admin(f'DROP DATABASE IF EXISTS "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--http", action="store_true", help="trigger over HTTP to a local fake Rasa")
    args = parser.parse_args()
    path = "HTTP to a local fake Rasa" if args.http else "in-process Rasa hop (no HTTP)"
    cfg = settings()
    print(f"scheduler throughput: {args.tasks} due tasks, PostgreSQL, {path}, {os.cpu_count()} CPUs, "
          f"batch {cfg.scheduler_batch_size}, {cfg.scheduler_fire_concurrency} triggers in flight per worker")
    for workers in args.workers:
        elapsed, queued, _ = run(args.tasks, workers, args.http)
        rate = queued / elapsed
        print(f"workers={workers}: {queued} tasks → outbound queue in {elapsed:.1f} s = {rate:,.0f} tasks/s "
              f"(Twilio default WhatsApp throughput: {TWILIO_DEFAULT_MPS} msg/s → {rate / TWILIO_DEFAULT_MPS:.1f}×)")


if __name__ == "__main__":
    main()
