"""The WhatsApp template registry (`whatsapp_templates.yml`): names, German bodies, variables, Content SIDs."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REGISTRY_PATH = Path(__file__).resolve().parents[2] / "whatsapp_templates.yml"
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    body: str
    variables: tuple[str, ...]
    purpose: str
    buttons: tuple[str, ...]
    content_sid: str  # empty: not approved in this environment

    @property
    def approved(self) -> bool:
        return bool(self.content_sid)

    def positional(self, variables: dict[str, Any] | list[Any] | None) -> dict[str, str]:
        """Map named or positional variables to Twilio's `{"1": ..., "2": ...}`; all must be present."""
        if isinstance(variables, list):
            values = [str(v) for v in variables]
        else:
            given = variables or {}
            values, missing = [], []
            for index, name in enumerate(self.variables):
                value = given.get(name, given.get(str(index + 1)))
                if value is None:
                    missing.append(name)
                values.append(str(value))
            if missing:
                raise TemplateError(f"template {self.name} needs variables: {', '.join(missing)}")
        if len(values) != len(self.variables):
            raise TemplateError(f"template {self.name} takes {len(self.variables)} variables, got {len(values)}")
        return {str(i + 1): value for i, value in enumerate(values)}

    def render(self, variables: dict[str, Any] | list[Any] | None) -> str:
        positional = self.positional(variables)
        return _PLACEHOLDER.sub(lambda m: positional[m.group(1)], self.body)

    def content_variables_json(self, variables: dict[str, Any] | list[Any] | None) -> str:
        return json.dumps(self.positional(variables), ensure_ascii=False)


def environment() -> str:
    return os.environ.get("LEADBOT_ENV", "sandbox").strip() or "sandbox"


@lru_cache(maxsize=4)
def load_registry(env: str | None = None, path: str = str(REGISTRY_PATH)) -> dict[str, Template]:
    env = env or environment()
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)["templates"]
    registry: dict[str, Template] = {}
    for name, spec in raw.items():
        override = os.environ.get(f"TWILIO_CONTENT_SID_{name.upper()}", "").strip()
        registry[name] = Template(
            name=name,
            body=spec["body"],
            variables=tuple(spec.get("variables") or ()),
            purpose=spec.get("purpose", "marketing"),
            buttons=tuple(spec.get("buttons") or ()),
            content_sid=override or (spec.get("content_sid") or {}).get(env, "") or "",
        )
    return registry


def get_template(name: str) -> Template:
    try:
        return load_registry()[name]
    except KeyError:
        raise TemplateError(f"unknown template: {name}") from None
