"""Parse a lead's answer to "Wie viele Leads generierst du ca. pro Monat?" (pure, no I/O).

Deterministic rules (pinned by tests/unit/test_understanding.py, summarised in docs/understanding.md):

Numbers
  * Digits and German number words ("hundertfünfzig", "zweihundert", "tausend") via text2num; "zwei"/"eins" and
    "anderthalbtausend"/"eineinhalbtausend" (1500), "zweieinhalbtausend" (2500) are handled here.
  * "1.500", "2.000", "1 500" are thousands separators; "1,5k", "1.5k", "2k", "2 tsd", "3 tausend" multiply by 1000.
    A decimal without a multiplier ("1,5 pro Tag") stays fractional until the final rounding.
  * Rounding is half up, once, after the period conversion.

Which number
  * Ignored: dates ("12.05."), times ("10:30"), money and percentages ("5000 €", "20 %"), durations
    ("seit 3 Monaten"), counts of other things ("3 Kampagnen", "5 Mitarbeiter").
  * Years: a 4-digit integer 1900-2099 without separator is a year (ignored) when it follows a date word
    (seit, im, in, anfang, mitte, ende, jahr, anno, vor, nach, für) or when the message has another non-year number.
    "2000" alone is a volume.
  * Several numbers: the first one directly followed by a lead noun ("150 Leads", "80 neue Anfragen") wins,
    otherwise the first number.

Qualifiers (kind -> estimate for the stated number N)
  * exact "150" -> N;  approx "ca./circa/etwa/ungefähr/rund/so um die/~/… oder so" -> N.
  * "knapp/fast/beinahe/nicht ganz N" -> approx, N - max(1, round(5 % of N)): knapp 100 -> 95, knapp 300 -> 285.
  * "über/mehr als/> N" -> lower_bound, N + 1 (über 99 -> 100, über 100 -> 101, über 299 -> 300).
  * "mindestens/ab/gut/>= N", "N+", "N oder mehr" -> lower_bound, N.
  * "unter/weniger als/< N", "keine N", "nicht mal N" -> upper_bound, N - 1 (unter 100 -> 99, unter 300 -> 299).
  * "bis zu/maximal/höchstens/<= N", "N oder weniger" -> upper_bound, N (bounds that include N keep N).
  * Ranges "50-60", "50 bis 60", "100–150", "zwischen 100 und 200", "50 oder 60" -> range, midpoint rounded half up
    (99-100 -> 100). "1-2k" applies the multiplier to both ends.
  * "ein paar/einige/mehrere hundert", "hunderte" -> lower_bound 200 (…tausend -> 2000).

Periods (default: month)
  * per day ("am Tag", "täglich", "pro Werktag") x30; per week ("pro Woche", "die Woche", "wöchentlich") x52/12;
    per quarter /3; per year ("pro Jahr", "im Jahr", "letztes Jahr", "jährlich", not "im Jahr 2024") /12.
  * The period phrase after the number wins over one before it in the same clause ("täglich 10").

No number
  * "keine Ahnung", "weiß nicht", "k.A.", "schwer zu sagen", 🤷 -> monthly_estimate None, bucket "unknown",
    kind "unknown".
  * "keine", "null", "nix", "noch keine Leads" -> 0, exact; not before another noun ("keine Zeit", "null Bock").
  * Anything else -> None (the caller should re-ask).

Buckets as in the product plan: "<100" (0-99), "100-300" (100-299), "300+" (>= 300).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from leadbot.domain.text import fold, normalize_text

Bucket = Literal["<100", "100-300", "300+", "unknown"]
VolumeKind = Literal["exact", "approx", "range", "lower_bound", "upper_bound", "unknown"]


@dataclass(frozen=True)
class LeadVolume:
    monthly_estimate: int | None
    bucket: Bucket
    kind: VolumeKind


UNKNOWN_VOLUME = LeadVolume(monthly_estimate=None, bucket="unknown", kind="unknown")


def bucket_for(monthly: int) -> Bucket:
    if monthly < 100:
        return "<100"
    if monthly < 300:
        return "100-300"
    return "300+"


# --- rewrites before text2num (operate on umlaut text) -------------------------------------------------------------
_PRE_REWRITES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        # People without umlaut keys; text2num only knows the umlaut spelling.
        (r"fuenf", "fünf"),
        (r"zwoelf", "zwölf"),
        (r"\b(?:anderthalb|eineinhalb)\s*tausend\b", "1500"),
        (r"\bzweieinhalb\s*tausend\b", "2500"),
        (r"\b(?:(?:ein\s+)?paar|einige|mehrere)\s+hundert\b|\bhunderte\b", "mindestens 200"),
        (r"\b(?:(?:ein\s+)?paar|einige|mehrere)\s+tausend\b|\btausende\b", "mindestens 2000"),
        # text2num ignores numbers below 3 by default; converting them all would turn "ein paar" into "1 paar".
        (r"\bzwei\b", "2"),
        (r"\beins\b", "1"),
        (r"\bein(?:e|en)?(?=\s+(?:lead|anfrage|kontakt|bis)\b)", "1"),
        (r"(\d+(?:[.,]\d+)?)\s*(?:tausend|tsd\.?)(?![a-zäöü])", r"\1k"),
        # "2 hundert" would otherwise become "2 100", which reads as the thousands-separated 2100.
        (r"(\d+)\s*hundert\b", lambda m: str(int(m.group(1)) * 100)),
        # "zwanzig-dreißig": text2num needs the dash detached from the words.
        (r"(?<=[a-zäöüß])\s*-\s*(?=[a-zäöüß])", " - "),
    )
)

# --- everything below runs on folded text (ä -> ae, ß -> ss) -------------------------------------------------------
_BLANK_OUT = re.compile(r"\b\d{1,2}\.\d{1,2}\.(?:\d{2,4})?|\b\d{1,2}:\d{2}\b|\b\d+/\d+\b")
_NUMBER = re.compile(
    r"(?<!\d[.,])(?<!\d)"
    r"(?P<num>\d{1,3}(?:\.\d{3})+(?![\d,])|\d{1,2}(?: \d{3})+(?![\d.,])|\d+(?:[.,]\d+)?)"
    r"(?P<mult>\s?(?:k|tsd\.?)(?![a-z]))?"
)
_NOT_A_VOLUME_AFTER = re.compile(
    r"^\s*(?:€|\$|%|euro\b|eur\b|usd\b|dollar\b|chf\b|prozent\b)"
    r"|^\s+(?:tage?n?|wochen?|monate?n?|jahre?n?|stunden?|std\b|minuten?|min\b|sekunden?)\b"
    r"|^\s+(?:kampagnen?|accounts?|konten|konto|mitarbeiter\w*|vertriebler\w*|standorte?n?|filialen?|plattformen?"
    r"|kanaele?n?|kanal|anzeigen|ads|creatives?|produkte?n?)\b"
    r"|^\s*(?:mal\s*)?dank"  # "tausend Dank" is thanks, not 1,000 leads
)
_NOT_A_VOLUME_BEFORE = re.compile(r"(?:€|\$|\beur|\busd)\s*$")
_YEAR_CONTEXT = re.compile(r"\b(?:seit|im|in|anfang|mitte|ende|jahr|anno|vor|nach|fuer)\s*$")
_LEAD_NOUN = re.compile(
    r"^\s*(?:[a-z]+\s+)?(?:leads?|anfragen?|kontakte?n?|interessenten|anmeldungen?|bewerbungen?|termine?|kunden"
    r"|neukunden|registrierungen?|opt-?ins?|eintragungen?|formulare?|calls|anrufe)\b"
)
_RANGE_JOIN = re.compile(r"^\s*(?:-|bis|to|oder|~)\s*$")
_BETWEEN_START = re.compile(r"\b(?:zwischen|von)\s*(?:ca\.?\s*|etwa\s*)?$")
_BETWEEN_JOIN = re.compile(r"^\s*(?:und|-|bis)\s*$")

Adjust = Literal["none", "plus_one", "minus_one", "just_under"]


def _prefix_rule(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![a-z])(?:{pattern})\s*$")


# Order matters: longer phrases that contain shorter ones ("nicht mehr als" vs "mehr als") come first.
_PREFIX_RULES: tuple[tuple[re.Pattern[str], VolumeKind, Adjust], ...] = (
    (_prefix_rule(r"nicht\s+mehr\s+als|hoechstens|maximal|max\.?|bis\s+zu|bis|<=|≤"), "upper_bound", "none"),
    (_prefix_rule(r"nicht\s+weniger\s+als|mindestens|min\.?|wenigstens|minimum|ab|>=|≥|gut"), "lower_bound", "none"),
    (_prefix_rule(r"(?:knapp\s+|deutlich\s+|weit\s+|etwas\s+)?(?:ueber|mehr\s+als)|>"), "lower_bound", "plus_one"),
    (
        _prefix_rule(
            r"(?:knapp\s+|deutlich\s+|etwas\s+)?(?:unter|weniger\s+als)|<|keine|(?:noch\s+)?nicht\s+(?:ein)?mal"
        ),
        "upper_bound",
        "minus_one",
    ),
    (_prefix_rule(r"knapp|fast|beinahe|nicht\s+ganz|annaehernd"), "approx", "just_under"),
    (
        _prefix_rule(
            r"ca\.?|circa|zirka|cirka|etwa|ungefaehr|rund|um\s+die|um|so|grob|schaetzungsweise|geschaetzt|gefuehlt"
            r"|vielleicht|~|≈|±|\+/?-"
        ),
        "approx",
        "none",
    ),
)
_SUFFIX_RULES: tuple[tuple[re.Pattern[str], VolumeKind], ...] = (
    (re.compile(r"^\s*\+|\b(?:plus(?!\s*minus)|und\s+mehr|oder\s+mehr|aufwaerts)\b"), "lower_bound"),
    (re.compile(r"\b(?:oder|und)\s+weniger\b|\bhoechstens\b|\bmaximal\b"), "upper_bound"),
    (
        re.compile(
            r"(?<![a-z])(?:oder\s+so|rum|herum|ungefaehr|circa|ca\.?|in\s+etwa|etwa|geschaetzt|schaetze\s+ich"
            r"|plus\s+minus|\+/?-)(?![a-z])"
        ),
        "approx",
    ),
)
_PERIODS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"(?:\b(?:pro|am|je|jeden|per)\s+|/\s*)(?:werk)?tag\b|\btaeglich\b|\bdaily\b"), 30.0),
    (
        re.compile(
            r"(?:\b(?:pro|die|in\s+der|je|jede|per|letzten?|vergangenen?)\s+|/\s*)(?:woche|wo)\b"
            r"|\bwoechentlich\b|\bweekly\b"
        ),
        52 / 12,
    ),
    (re.compile(r"(?:\b(?:pro|im|je|jeden|den|per)\s+|/\s*)monat\b|\bmonatlich\b|\bmtl\b|\bmonthly\b"), 1.0),
    (re.compile(r"(?:\b(?:pro|im|je|per)\s+|/\s*)quartal\b|\bquartalsweise\b|\bvierteljaehrlich\b"), 1 / 3),
    (
        re.compile(
            r"(?:\b(?:pro|im|je|jedes|das|per|letzte[ns]?|vergangene[ns]?)\s+|/\s*)jahr\b(?!\s*\d)"
            r"|\bjaehrlich\b|\byearly\b|\bp\.\s?a\b"
        ),
        1 / 12,
    ),
)
_CLAUSE_BREAK = re.compile(r"[,;!?]")
_UNKNOWN = re.compile(
    r"keine\s+ahnung|kein(?:en)?\s+plan|null\s+plan|wei(?:ss|s)\s+(?:ich\s+|es\s+)*(?:\w+\s+)?nicht"
    r"|(?<![a-z])k\.?\s?a\.?(?![a-z])|\bunklar\b|schwer\s+zu\s+sagen|kann\s+ich\s+(?:\w+\s+){0,2}nicht\s+sagen"
    r"|keine\s+(?:zahlen|daten|idee)|(?:messen|tracken|zaehlen)\s+wir\s+nicht|keinen\s+ueberblick|🤷"
)
# Zero only where the zero word stands alone or before a lead noun or a filler ("keine.", "noch keine Leads",
# "null im Monat", "leider keine 😅"): "keine Zeit", "kein Problem", "null Bock" are not lead volumes.
_ZERO = re.compile(
    r"(?<![a-z])(?:null|nix|nichts|keine?n?)(?![a-z])"
    r"(?=\s*(?:$|[^\w\s]|(?:einzige[nrs]?\s+)?(?:\w*leads?|\w*anfragen?|kontakte?|kunden|interessenten|eintraege"
    r"|mehr|bisher|aktuell|momentan|derzeit|gerade|grad|im|pro|am|in\s+der|so|wirklich|richtig|nennenswert\w*"
    r"|los|wir|ich)\b))"
)


@dataclass(frozen=True)
class _Number:
    start: int
    end: int
    value: float
    has_multiplier: bool
    is_plain_integer: bool


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _to_digits(text: str) -> str:
    from text_to_num import alpha2digit  # lazy: the Rasa 3.10 venv imports this module without text2num

    for pattern, replacement in _PRE_REWRITES:
        text = pattern.sub(replacement, text)
    return alpha2digit(text, "de")


def _scan_numbers(text: str) -> list[_Number]:
    numbers = []
    for match in _NUMBER.finditer(text):
        raw = match.group("num")
        if " " in raw or re.fullmatch(r"\d{1,3}(?:\.\d{3})+", raw):
            value, plain = float(raw.replace(".", "").replace(" ", "")), False
        else:
            value, plain = float(raw.replace(",", ".")), raw.isdigit()
        has_multiplier = match.group("mult") is not None
        if has_multiplier:
            value *= 1000
        numbers.append(_Number(match.start(), match.end(), value, has_multiplier, plain and not has_multiplier))
    return numbers


def _looks_like_year(number: _Number) -> bool:
    return number.is_plain_integer and number.end - number.start == 4 and 1900 <= number.value <= 2099


def _is_year(number: _Number, text: str, numbers: list[_Number]) -> bool:
    if not _looks_like_year(number):
        return False
    return bool(_YEAR_CONTEXT.search(text[: number.start])) or any(not _looks_like_year(n) for n in numbers)


def _volume_numbers(text: str, numbers: list[_Number]) -> list[_Number]:
    return [
        n
        for n in numbers
        if not _NOT_A_VOLUME_AFTER.search(text[n.end :])
        and not _NOT_A_VOLUME_BEFORE.search(text[: n.start])
        and not _is_year(n, text, numbers)
    ]


def _period_factor(before: str, after: str) -> float:
    best: tuple[int, float] | None = None
    for pattern, factor in _PERIODS:
        match = pattern.search(after)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), factor)
    if best:
        return best[1]
    last: tuple[int, float] | None = None
    for pattern, factor in _PERIODS:
        for match in pattern.finditer(before):
            # "20 % mehr als letztes Jahr, also 150": a period in an earlier clause describes something else.
            if _CLAUSE_BREAK.search(before[match.end() :]):
                continue
            if last is None or match.start() > last[0]:
                last = (match.start(), factor)
    return last[1] if last else 1.0


def _qualify(value: float, before: str, after: str) -> tuple[float, VolumeKind]:
    for pattern, kind, adjust in _PREFIX_RULES:
        if pattern.search(before):
            if adjust == "plus_one":
                return value + 1, kind
            if adjust == "minus_one":
                return max(value - 1, 0), kind
            if adjust == "just_under":
                return value - max(1, _round_half_up(value * 0.05)), kind
            return value, kind
    for pattern, kind in _SUFFIX_RULES:
        if pattern.search(after):
            return value, kind
    return value, "exact"


def parse_lead_volume(text: str) -> LeadVolume | None:
    """Interpret a monthly lead volume; see the module docstring for the exact rules."""
    folded = fold(_to_digits(normalize_text(text)))
    folded = _BLANK_OUT.sub(" ", folded)
    all_numbers = _scan_numbers(folded)
    candidates = _volume_numbers(folded, all_numbers)
    if not candidates:
        if _UNKNOWN.search(folded):
            return UNKNOWN_VOLUME
        if _ZERO.search(folded):
            return LeadVolume(monthly_estimate=0, bucket="<100", kind="exact")
        return None

    # Group into single numbers and ranges, in order of appearance.
    items: list[tuple[_Number, _Number]] = []
    i = 0
    while i < len(candidates):
        low = candidates[i]
        if i + 1 < len(candidates):
            high = candidates[i + 1]
            between = folded[low.end : high.start]
            if _RANGE_JOIN.match(between) or (
                _BETWEEN_JOIN.match(between) and _BETWEEN_START.search(folded[: low.start])
            ):
                items.append((low, high))
                i += 2
                continue
        items.append((low, low))
        i += 1

    low, high = next((item for item in items if _LEAD_NOUN.match(folded[item[1].end :])), items[0])
    previous_end = max((n.end for n in all_numbers if n.end <= low.start), default=0)
    next_start = min((n.start for n in all_numbers if n.start >= high.end), default=len(folded))
    before, after = folded[previous_end : low.start], folded[high.end : next_start]

    if low is high:
        value, kind = _qualify(low.value, before, after)
    else:
        low_value = low.value
        # "1-2k": the multiplier written once applies to both ends.
        if high.has_multiplier and not low.has_multiplier and low.value * 1000 < high.value:
            low_value *= 1000
        value, kind = (low_value + high.value) / 2, "range"

    monthly = max(_round_half_up(value * _period_factor(before, after)), 0)
    return LeadVolume(monthly_estimate=monthly, bucket=bucket_for(monthly), kind=kind)
