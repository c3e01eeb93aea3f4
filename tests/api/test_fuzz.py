"""Schema-driven fuzzing: schemathesis generates requests from the served OpenAPI schema; no answer may be a 5xx.

Valid and invalid requests (schemathesis' positive and negative modes), bounded (a fixed number of examples per
operation and mode, derandomized) so the suite stays fast and reproducible. A
contact, conversation, handover and dead letter with id 1 exist, so generated ids sometimes reach the use cases.
Driven through Hypothesis directly (one property per operation) rather than schemathesis' pytest plugin, whose
lazy fixture loader does not run on this pytest version.
"""

from __future__ import annotations

from collections import Counter

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from sqlalchemy.orm import Session

from leadbot.db.models import DeadLetter
from leadbot.services import handover, outbound
from tests.api.conftest import API_KEY, make_contact

EXAMPLES_PER_OPERATION = 30


def test_no_server_errors_on_any_operation(client: TestClient, session: Session, team_calendar: None) -> None:
    _, conversation = make_contact(session)
    message = outbound.enqueue(session, conversation, text="Hallo")
    session.add(DeadLetter(kind="outbound_message", message_id=message.message_id, reason="63016"))
    handover.start(session, conversation, "fuzz")
    session.commit()

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19
    statuses: Counter[int] = Counter()
    for operation, mode in [(op, mode) for op in operations for mode in schemathesis.GenerationMode]:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def property_holds(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {API_KEY}"}, checks=[not_a_server_error]
            )
            statuses[response.status_code] += 1

        try:
            property_holds()
        except Unsatisfiable:
            # Negative mode on an operation without parameters or body: there is nothing to make invalid.
            assert mode is schemathesis.GenerationMode.NEGATIVE and not operation.body and not operation.query
    # The run really exercised the API: many requests, and some got past validation into the use cases.
    assert sum(statuses.values()) >= len(operations) * 10
    assert any(200 <= status < 300 for status in statuses), statuses
