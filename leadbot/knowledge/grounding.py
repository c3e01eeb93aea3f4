"""Grounding check for generated answers: every number, price or promise must be backed by the retrieved text."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d[\d.]*(?:,\d+)?")
_WORD = re.compile(r"[a-zäöüß]+")
_NUMBER_WORDS = {
    "zwei": "2", "drei": "3", "vier": "4", "fünf": "5", "sechs": "6", "sieben": "7", "acht": "8", "neun": "9",
    "zehn": "10", "elf": "11", "zwölf": "12", "zwanzig": "20", "dreißig": "30", "vierzig": "40", "fünfzig": "50",
    "hundert": "100", "tausend": "1000",
}
# Word stems that turn a sentence into a commitment (price, guarantee, deadline); matched as substrings.
PROMISE_STEMS: tuple[str, ...] = (
    "garant", "verbindlich", "zusag", "versprech", "kostenlos", "kostenfrei", "gratis", "umsonst", "geschenkt",
    "rabatt", "erstatt", "geld zurück", "unbegrenzt", "lebenslang", "für immer", "rechtssicher", "sofort",
)


def _numbers(text: str) -> set[str]:
    found = set()
    for raw in _NUMBER.findall(text):
        value = raw.rstrip(".")
        value = re.sub(r"\.(?=\d{3}(?!\d))", "", value).replace(",", ".")
        found.add(value.rstrip("0").rstrip(".") if "." in value else value)
    found.update(_NUMBER_WORDS[word] for word in _WORD.findall(text.lower()) if word in _NUMBER_WORDS)
    return found


def ungrounded_claims(answer: str, evidence: str) -> list[str]:
    """Numbers and promise words in `answer` that do not occur in `evidence` (empty list: grounded)."""
    claims = sorted(_numbers(answer) - _numbers(evidence))
    answer_lower, evidence_lower = answer.lower(), evidence.lower()
    claims += [stem for stem in PROMISE_STEMS if stem in answer_lower and stem not in evidence_lower]
    return claims
