"""Webhook ack latency: our `whatsapp` channel against Rasa 3.6's built-in `twilio` channel (issue 3).

Both channels are mounted on ONE Rasa server with the same model, in the same run, and get the same load: N
inbound messages (each from its own lead, so no lock waits), C at a time. Twilio waits at most 15 s for the ack.

- ours: signed request, the message is persisted (deduplicated), `<Response/>` is returned, the turn runs after.
- built-in: unsigned, the whole turn runs inside the request, then the blocking Twilio client is called for the
  reply. This machine cannot reach Twilio, so that call fails fast (name resolution) and the built-in answers
  500; on a real network that call adds a Twilio round trip per reply to the built-in's ack, so the ratio below
  is a lower bound.

Usage: .venv/bin/python bench/webhook_ack.py [-n 200] [-c 8] [--model PATH]
Needs the local PostgreSQL (TEST_POSTGRES_ADMIN_URL) and Redis (TEST_REDIS_URL) the tests use. < 2 min.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from leadbot.db import migrate  # noqa: E402
from tests.channel.conftest import (  # noqa: E402
    AUTH_TOKEN,
    INBOUND_PATH,
    REDIS_BASE,
    inbound_form,
    random_e164,
    sign,
    start_rasa,
    train_bot_model,
)
from tests.conftest import create_database, drop_database  # noqa: E402

BUILTIN_PATH = "/webhooks/twilio/webhook"
CREDENTIALS = f"""\
leadbot.channel.whatsapp.WhatsAppInput:
twilio:
  account_sid: "AC{"0" * 32}"
  auth_token: "{AUTH_TOKEN}"
  twilio_number: "whatsapp:+14155238886"
rest:
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def fire(requests: list[tuple[str, bytes, dict[str, str]]], concurrency: int) -> tuple[list[float], dict]:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(url: str, body: bytes, headers: dict[str, str]) -> None:
            async with semaphore:
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - started)
                codes[response.status_code] = codes.get(response.status_code, 0) + 1

        await asyncio.gather(*(one(*request) for request in requests))
    return latencies, codes


def ours(server, count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    requests = []
    for _ in range(count):
        form = inbound_form(random_e164(), "hallo")
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign(server.auth_token, server.public(INBOUND_PATH), form),
        }
        requests.append((server.base + INBOUND_PATH, urlencode(form).encode(), headers))
    return requests


def builtin(server, count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return [
        (server.base + BUILTIN_PATH, urlencode(inbound_form(random_e164(), "hallo")).encode(), headers)
        for _ in range(count)
    ]


def report(name: str, latencies: list[float], codes: dict) -> tuple[float, float]:
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(
        f"{name:<26} n={len(latencies):<5} p50={p50:8.1f} ms  p99={p99:8.1f} ms  "
        f"mean={statistics.mean(latencies) * 1000:8.1f} ms  codes={dict(sorted(codes.items()))}"
    )
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=200, help="requests per channel")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--model", type=Path, help="a trained Rasa model (default: the channel tests' tiny bot)")
    args = parser.parse_args()

    model = args.model or train_bot_model()
    suffix = uuid.uuid4().hex[:8]
    app_db, tracker_db = f"leadbot_bench_{suffix}", f"leadbot_bench_tracker_{suffix}"
    app_url = create_database(app_db)
    tracker_url = create_database(tracker_db)
    server = None
    try:
        migrate.upgrade(app_url)
        with tempfile.TemporaryDirectory() as tmp:
            credentials = Path(tmp) / "credentials.yml"
            credentials.write_text(CREDENTIALS, encoding="utf-8")
            started = time.monotonic()
            server = start_rasa(
                "bench",
                model=model,
                database_url=app_url,
                tracker_url=tracker_url,
                redis_url=f"{REDIS_BASE}/12",
                action_url="http://127.0.0.1:9/webhook",
                auth_token=AUTH_TOKEN,
                credentials=credentials,
            )
            print(
                f"Rasa up in {time.monotonic() - started:.1f} s; model {model.name}; "
                f"{args.requests} requests per channel, {args.concurrency} concurrent\n"
            )
            # Warm-up both paths (first turn loads lazily), then measure them interleaved in rounds so load
            # changes on the machine hit both alike.
            asyncio.run(fire(ours(server, 5) + builtin(server, 5), 2))
            results: dict[str, tuple[list[float], dict]] = {"ours": ([], {}), "builtin": ([], {})}
            rounds = 4
            for _ in range(rounds):
                for name, make in (("ours", ours), ("builtin", builtin)):
                    latencies, codes = asyncio.run(fire(make(server, args.requests // rounds), args.concurrency))
                    results[name][0].extend(latencies)
                    for code, count in codes.items():
                        results[name][1][code] = results[name][1].get(code, 0) + count
            ours_p50, ours_p99 = report("whatsapp (ours)", *results["ours"])
            base_p50, base_p99 = report("twilio (Rasa built-in)", *results["builtin"])
            print(f"\nratio built-in / ours: p50 {base_p50 / ours_p50:.1f}x, p99 {base_p99 / ours_p99:.1f}x")
    finally:
        if server is not None:
            server.stop()
        drop_database(app_db)
        drop_database(tracker_db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
