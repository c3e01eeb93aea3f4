"""Every environment variable the code reads is documented in .env.example."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READ = re.compile(r"""(?:_(?:env|int|float|bool)\(|environ\.get\(|environ\[|getenv\()\s*"([A-Z][A-Z0-9_]+)\"""")


def test_every_setting_is_documented():
    code = "\n".join(path.read_text() for path in (ROOT / "leadbot").rglob("*.py"))
    read = set(READ.findall(code))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "no settings found: the pattern no longer matches leadbot/config.py"
    assert sorted(read - documented) == []
