"""Every endpoint except health and metrics needs the API key: 401 without, 403 with a wrong one."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from leadbot.api.app import create_app

OPEN_PATHS = {"/health", "/metrics"}


def _operations() -> list[tuple[str, str]]:
    schema = create_app().openapi()
    return [
        (method.upper(), re.sub(r"\{[^}]+\}", "1", path))
        for path, item in schema["paths"].items()
        for method in item
        if path not in OPEN_PATHS
    ]


def test_every_documented_operation_is_covered() -> None:
    paths = {path for _, path in _operations()}
    for expected in (
        "/messages/send",
        "/integrations/crm/lead-upsert",
        "/integrations/crm/activity",
        "/integrations/crm/handover",
        "/privacy/export",
        "/privacy/delete",
        "/privacy/revoke-consent",
        "/conversations/1/hand-back",
        "/handovers",
        "/dead-letters",
        "/dead-letters/1/replay",
        "/leads",
    ):
        assert expected in paths


@pytest.mark.parametrize(("method", "path"), _operations())
def test_missing_key_is_401_and_wrong_key_is_403(bare_client: TestClient, method: str, path: str) -> None:
    client = bare_client
    # An empty body too: authentication is decided before validation, so no schema detail leaks to strangers.
    missing = client.request(method, path, json={})
    assert missing.status_code == 401, missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.request(method, path, json={}, headers={"Authorization": "Bearer not-the-key"})
    assert wrong.status_code == 403, wrong.text


def test_health_metrics_and_schema_are_served(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "leadbot_handovers_total" in metrics.text
    schema = client.get("/openapi.json").json()
    assert "/messages/send" in schema["paths"]
    assert client.get("/docs").status_code == 200
