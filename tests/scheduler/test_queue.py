"""The durable queue: leases and crash recovery, retries with backoff, dead letters, replicas, SQLite."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from leadbot.config import settings
from leadbot.db import migrate
from leadbot.db.models import DeadLetter, TaskScheduled
from leadbot.db.session import create_db_engine
from leadbot.phone import sender_id_for
from leadbot.services import tasks
from scheduler.firing import Firer
from scheduler.queue import TaskQueue
from scheduler.rasa_client import HttpRasaClient
from tests.scheduler.helpers import TOKEN, bulk_due_tasks, make_lead


def _due_nudges(engine, count: int, at) -> list[int]:
    return bulk_due_tasks(engine, count, at)


def test_worker_killed_while_holding_a_lease(engine, frozen_clock, fake_rasa, scheduler_env):
    [task_id] = _due_nudges(engine, 1, frozen_clock.now())
    # Worker A claims the task and dies before firing it (nothing after the claim runs).
    dead = TaskQueue(engine, "worker-a", lease_seconds=120)
    assert dead.claim(10) == [task_id]

    survivor = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "worker-b")
    frozen_clock.advance(timedelta(seconds=119))
    assert survivor.run_once().claimed == 0  # the lease still protects the task
    frozen_clock.advance(timedelta(seconds=2))
    stats = survivor.run_once()
    assert (stats.claimed, stats.fired) == (1, 1)
    assert [call.entities["task_id"] for call in fake_rasa.calls] == [str(task_id)]

    with Session(engine, future=True) as session:
        task = session.get(TaskScheduled, task_id)
        assert (task.status, task.attempts, task.locked_by) == ("done", 2, "worker-b")
    # The dead worker coming back cannot settle the task anymore (fenced by locked_by).
    assert dead.complete(task_id) is False


def test_rasa_errors_retry_with_backoff_then_dead_letter(engine, frozen_clock, fake_rasa, scheduler_env):
    [task_id] = _due_nudges(engine, 1, frozen_clock.now())
    fake_rasa.failures = [500, 503, 500]
    firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w")
    start = frozen_clock.now()
    run_ats = []
    for _ in range(3):
        firer.run_once()
        with Session(engine, future=True) as session:
            task = session.get(TaskScheduled, task_id)
            run_ats.append((task.status, task.attempts, task.run_at - start))
        frozen_clock.set(task.run_at)
    # TASK_BACKOFF_BASE_SECONDS=10, TASK_MAX_ATTEMPTS=3 in scheduler_env.
    assert run_ats == [
        ("pending", 1, timedelta(seconds=10)),
        ("pending", 2, timedelta(seconds=30)),
        ("failed", 3, timedelta(seconds=30)),
    ]
    with Session(engine, future=True) as session:
        letter = session.execute(select(DeadLetter)).scalar_one()
        assert (letter.kind, letter.task_id, letter.attempts) == ("task", task_id, 3)
        assert "HTTP 500" in letter.reason
    assert fake_rasa.calls == []


def test_retry_succeeds_after_a_transient_error(engine, frozen_clock, fake_rasa, scheduler_env):
    [task_id] = _due_nudges(engine, 1, frozen_clock.now())
    fake_rasa.failures = [502]
    firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w")
    assert firer.run_once().retried == 1
    frozen_clock.advance(timedelta(seconds=10))
    assert firer.run_once().fired == 1
    assert len(fake_rasa.calls) == 1


def test_trigger_without_token_is_rejected_by_rasa(engine, frozen_clock, fake_rasa, scheduler_env):
    _due_nudges(engine, 1, frozen_clock.now())
    stats = Firer(engine, HttpRasaClient(fake_rasa.url, token=""), "w").run_once()
    assert stats.retried == 1 and fake_rasa.calls == []
    with Session(engine, future=True) as session:
        assert "HTTP 401" in session.execute(select(TaskScheduled.last_error)).scalar_one()


def test_stopping_worker_gives_claimed_tasks_back(engine, frozen_clock, fake_rasa, scheduler_env):
    ids = _due_nudges(engine, 3, frozen_clock.now())
    # One trigger at a time, so exactly the first task is in flight when the signal arrives.
    firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w", replace(settings(), scheduler_fire_concurrency=1))
    fake_rasa.on_trigger = lambda trigger: firer.stop()  # SIGTERM arrives while the first task is in flight
    stats = firer.fire_batch()
    assert (stats.fired, stats.released) == (1, 2)
    with Session(engine, future=True) as session:
        rows = {t.id: (t.status, t.attempts, t.locked_by) for t in session.execute(select(TaskScheduled)).scalars()}
    assert sorted(rows.values()) == [("done", 1, "w"), ("pending", 0, None), ("pending", 0, None)]
    assert set(rows) == set(ids)


def test_stopping_lets_concurrent_triggers_finish_and_gives_back_the_rest(engine, frozen_clock, fake_rasa,
                                                                          scheduler_env):
    ids = _due_nudges(engine, 12, frozen_clock.now())
    cfg = replace(settings(), scheduler_fire_concurrency=3, scheduler_batch_size=12)
    firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w", cfg)
    fake_rasa.on_trigger = lambda trigger: firer.stop()  # SIGTERM arrives with the first trigger
    stats = firer.fire_batch()
    fired = {int(call.entities["task_id"]) for call in fake_rasa.calls}
    # At most one trigger per concurrent slot had started; none starts after the signal.
    assert 1 <= stats.fired == len(fired) <= 3
    assert stats.fired + stats.released == len(ids)
    with Session(engine, future=True) as session:
        rows = {t.id: (t.status, t.attempts, t.locked_by) for t in session.execute(select(TaskScheduled)).scalars()}
    assert {task_id: rows[task_id] for task_id in fired} == {task_id: ("done", 1, "w") for task_id in fired}
    assert {rows[task_id] for task_id in set(ids) - fired} == {("pending", 0, None)}


def test_one_conversations_tasks_fire_in_order_never_at_once(engine, session, frozen_clock, fake_rasa,
                                                             scheduler_env):
    """Concurrent triggers are for different conversations; one conversation's due tasks go oldest first, each
    after the previous one has returned."""
    t0 = frozen_clock.now()
    others = _due_nudges(engine, 6, t0)
    conversation = make_lead(session, "+4915100000099", status="qualified", at=t0)
    own = [tasks.schedule(session, conversation, task_type, t0 - timedelta(minutes=minutes)).id
           for task_type, minutes in (("followup_48h", 1), ("welcome", 3), ("followup_24h", 2))]
    session.commit()
    in_flight: Counter = Counter()
    overlaps = []

    def on_trigger(trigger) -> None:
        with fake_rasa.lock:
            in_flight[trigger.sender_id] += 1
            if in_flight[trigger.sender_id] > 1:
                overlaps.append(trigger)
        time.sleep(0.05)  # long enough for a second trigger of the same conversation to show up if one were sent
        with fake_rasa.lock:
            in_flight[trigger.sender_id] -= 1

    fake_rasa.on_trigger = on_trigger
    cfg = replace(settings(), scheduler_fire_concurrency=4)
    stats = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "w", cfg).run_once()
    assert stats.fired == len(others) + len(own)
    assert overlaps == []
    sender = sender_id_for("+4915100000099")
    assert [int(call.entities["task_id"]) for call in fake_rasa.calls if call.sender_id == sender] == [
        own[1], own[2], own[0]
    ]


def test_concurrent_claims_stay_within_the_batch_size(engine, frozen_clock, scheduler_env):
    """Two workers claiming at once each get at most `limit` tasks, and every task exactly once."""
    ids = _due_nudges(engine, 400, frozen_clock.now())
    sizes: dict[str, list[int]] = {"a": [], "b": []}
    claimed: list[int] = []
    barrier = threading.Barrier(2)

    def claim_all(name: str) -> None:
        queue = TaskQueue(engine, name, lease_seconds=120)
        barrier.wait()
        while batch := queue.claim(20):
            sizes[name].append(len(batch))
            claimed.extend(batch)

    threads = [threading.Thread(target=claim_all, args=(name,)) for name in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(sizes["a"] + sizes["b"]) <= 20
    assert sorted(claimed) == sorted(ids)


@pytest.mark.slow
def test_two_replicas_on_postgresql_never_fire_a_task_twice(engine, frozen_clock, fake_rasa, scheduler_env):
    """Four workers (two per "replica") hammer one queue of 800 due tasks; every task fires exactly once."""
    ids = _due_nudges(engine, 800, frozen_clock.now())
    barrier = threading.Barrier(4)
    results = []

    def worker(name: str) -> None:
        firer = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), name)
        barrier.wait()
        results.append(firer.run_once())

    threads = [threading.Thread(target=worker, args=(f"replica{r}-w{w}",)) for r in (1, 2) for w in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    fired = Counter(int(call.entities["task_id"]) for call in fake_rasa.calls)
    doubles = {task_id: count for task_id, count in fired.items() if count > 1}
    print(f"\nreplicas: fired {len(fired)} of {len(ids)}, per worker {[r.fired for r in results]}, doubles {doubles}")
    assert doubles == {}
    assert set(fired) == set(ids)
    assert sum(r.fired for r in results) == len(ids)
    assert sum(1 for r in results if r.fired > 0) >= 2  # the work really was shared
    with Session(engine, future=True) as session:
        statuses = Counter(session.execute(select(TaskScheduled.status)).scalars())
    assert statuses == {"done": len(ids)}


def test_embedded_sqlite_runs_one_worker(sqlite_url, frozen_clock, fake_rasa, scheduler_env):
    migrate.upgrade(sqlite_url)
    engine = create_db_engine(sqlite_url)
    try:
        ids = _due_nudges(engine, 5, frozen_clock.now())
        with Session(engine, future=True) as session:
            conversation_id = session.get(TaskScheduled, ids[0]).conversation_id
            tasks.cancel(session, conversation_id, ["nudge_30m"], "test")
            session.commit()
        stats = Firer(engine, HttpRasaClient(fake_rasa.url, TOKEN), "embedded").run_once()
        assert (stats.fired, stats.claimed) == (4, 4)
        assert sorted(int(call.entities["task_id"]) for call in fake_rasa.calls) == ids[1:]
        # A second claim finds nothing: the status path holds without row locks too.
        assert TaskQueue(engine, "other", 120).claim(10) == []
    finally:
        engine.dispose()
