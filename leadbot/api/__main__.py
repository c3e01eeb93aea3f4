"""`python -m leadbot.api`: serve the ops API on `OPS_API_HOST`:`OPS_API_PORT` (default 0.0.0.0:8000).

Uvicorn handles SIGTERM/SIGINT gracefully: it stops accepting connections and lets running requests finish
(bounded by `OPS_API_GRACEFUL_TIMEOUT_SECONDS`), so a deploy never cuts a request between its write and its answer.
"""

from __future__ import annotations

import uvicorn

from leadbot import logs
from leadbot.config import settings


def main() -> None:
    logs.configure("ops-api")
    cfg = settings()
    uvicorn.run(
        "leadbot.api.app:app",
        host=cfg.ops_api_host,
        port=cfg.ops_api_port,
        proxy_headers=True,
        timeout_graceful_shutdown=cfg.ops_api_graceful_timeout_seconds,
        # Keep our JSON, phone-masking log handler instead of uvicorn's default config.
        log_config=None,
    )


if __name__ == "__main__":
    main()
