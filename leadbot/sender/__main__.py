"""`python -m leadbot.sender`: the sender process (health and metrics on SENDER_PORT, stops cleanly on SIGTERM)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from leadbot.adapters.twilio_transport import SandboxTransport, build_transport
from leadbot.clock import now
from leadbot.config import settings
from leadbot.sender.worker import Sender, refresh_queue_gauges
from leadbot.status_server import start_status_server

log = logging.getLogger("leadbot.sender")
GAUGE_INTERVAL_SECONDS = 5.0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = settings()
    transport = build_transport(cfg)
    sender = Sender(transport, cfg=cfg)
    stop = threading.Event()
    state: dict[str, Any] = {"last_gauges_at": None, "queue_depth": None}

    def health() -> dict[str, Any]:
        return {
            "status": "ok" if not stop.is_set() else "stopping",
            "transport": transport.name,
            "threads": sender.threads,
            "busy": sender.busy,
            "queue_depth": state["queue_depth"],
            "last_gauges_at": state["last_gauges_at"],
        }

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: finishing in-flight sends, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def gauges() -> None:
        while not stop.is_set():
            try:
                state["queue_depth"], _lag = refresh_queue_gauges(sender.engine)
                state["last_gauges_at"] = now().isoformat()
            except Exception:  # noqa: BLE001 - metrics must not stop the sender
                log.exception("queue gauges failed")
            stop.wait(GAUGE_INTERVAL_SECONDS)

    server = start_status_server(cfg.sender_port, health, "sender")
    threading.Thread(target=gauges, name="sender-gauges", daemon=True).start()
    log.info("sender started: transport=%s threads=%s port=%s", transport.name, sender.threads, cfg.sender_port)
    sender.run(stop)  # returns once every worker thread has finished its in-flight message
    if isinstance(transport, SandboxTransport):
        transport.flush(timeout=5.0)
    server.shutdown()
    log.info("sender stopped")


if __name__ == "__main__":
    main()
