from __future__ import annotations

import json
import logging

from leadbot.logs import JsonFormatter, MaskingFilter
from leadbot.phone import mask


def test_mask_keeps_prefix_and_last_digits():
    assert mask("from whatsapp:+4915112345678 now") == "from whatsapp:+49*********78 now"
    assert "15112345" not in mask("call 0151 1234 5678")


def test_log_records_are_json_with_numbers_masked():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "inbound from %s", ("+4915112345678",), None)
    assert MaskingFilter().filter(record)
    line = json.loads(JsonFormatter("test").format(record))
    assert line["msg"] == "inbound from +49*********78"
    assert line["service"] == "test" and line["level"] == "info"
