"""The action server process: rasa-sdk's app for the `actions` package, plus `/metrics` and JSON logs.

`python -m rasa_sdk` would serve the same actions; this entry point adds what every leadbot process has
(Prometheus metrics, masked JSON logs) and loads the knowledge index once before the first request.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rasa_sdk.endpoint import create_app
from rasa_sdk.executor import ActionExecutor
from sanic import Sanic, response
from sanic.request import Request

from leadbot import logs

logger = logging.getLogger(__name__)


def build_app(package: str = "actions") -> Sanic:
    executor = ActionExecutor()
    executor.register_package(package)
    app = create_app(executor)

    @app.get("/metrics")
    async def metrics(_: Request) -> response.HTTPResponse:
        return response.raw(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.before_server_start
    async def warm_up(*_: object) -> None:
        if os.environ.get("KNOWLEDGE_WARMUP", "1") != "0":
            try:
                from actions.knowledge import shared_assistant

                await asyncio.to_thread(shared_assistant)  # the same instance the action answers with
            except Exception:  # the assistant escalates on its own when it cannot load; never block start-up
                logger.exception("knowledge index could not be loaded at start")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="leadbot action server")
    parser.add_argument("--port", type=int, default=int(os.environ.get("ACTION_PORT", "5055")))
    parser.add_argument("--host", default=os.environ.get("ACTION_HOST", "0.0.0.0"))
    args = parser.parse_args()
    logs.configure("actions")
    app = build_app()
    app.run(host=args.host, port=args.port, workers=1, access_log=False, single_process=True)


if __name__ == "__main__":
    main()
