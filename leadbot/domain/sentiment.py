"""Offline German sentiment score for lead messages (lexicon rules, no models, no network).

The lexicon lives in ``sentiment_de.yml`` next to this module (our own word list; SentiWS is not used because of its
non-commercial license). Scoring, VADER-style:

* phrases ("lasst mich in ruhe") are scored first and removed, then emojis, then words (exact or ``prefix*``);
* an intensifier directly before a word multiplies it ("total nervig"); an intensifier that is itself a lexicon word
  ("mega") only counts as a word when no scored word follows;
* a negator up to three words before a word flips it: positive words keep 80 % ("nicht gut"), negative words only 40 %
  ("nicht schlecht" is lukewarm praise, not enthusiasm); punctuation ends the negation scope;
* shouting amplifies the sum: each "!" (max 4) adds 0.3 in the sum's direction; mostly upper-case text x1.3;
* the sum s is squashed to [-1, 1] with s / sqrt(s^2 + 8): one strong insult ("Abzocke", -3.5) gives about -0.78,
  one "gut" (+1.9) about +0.56, a plain business answer without lexicon words exactly 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from leadbot.domain.text import fold

LEXICON_PATH = Path(__file__).with_name("sentiment_de.yml")
DEFAULT_NEGATIVE_THRESHOLD = 0.5

_NEGATION_WINDOW = 3
_NEGATED_POSITIVE = -0.8
_NEGATED_NEGATIVE = -0.4
_EXCLAMATION_STEP = 0.3
_MAX_EXCLAMATIONS = 4
_SHOUT_FACTOR = 1.3
_SQUASH_ALPHA = 8.0
_TOKEN = re.compile(r"[a-z0-9]+|[.,;:!?]")


@dataclass(frozen=True)
class _Lexicon:
    words: dict[str, float]
    prefixes: tuple[tuple[str, float], ...]
    phrases: tuple[tuple[re.Pattern[str], float], ...]
    emojis: dict[str, float]
    intensifiers: dict[str, float]
    negators: frozenset[str]

    def word_score(self, token: str) -> float:
        if token in self.words:
            return self.words[token]
        return next((score for prefix, score in self.prefixes if token.startswith(prefix)), 0.0)


@lru_cache(maxsize=1)
def _lexicon() -> _Lexicon:
    import yaml  # lazy: keeps importing the domain package cheap

    data = yaml.safe_load(LEXICON_PATH.read_text(encoding="utf-8"))
    words: dict[str, float] = {}
    prefixes: list[tuple[str, float]] = []
    for key, score in data["words"].items():
        key = fold(key)
        if key.endswith("*"):
            prefixes.append((key[:-1], float(score)))
        else:
            words[key] = float(score)
    # Longest phrase first so "was soll der mist" wins over "was soll das".
    phrases = sorted(((fold(k), float(v)) for k, v in data["phrases"].items()), key=lambda kv: -len(kv[0]))
    return _Lexicon(
        words=words,
        prefixes=tuple(sorted(prefixes, key=lambda kv: -len(kv[0]))),
        phrases=tuple((re.compile(rf"(?<![a-z]){re.escape(k)}(?![a-z])"), v) for k, v in phrases),
        emojis={k: float(v) for k, v in data["emojis"].items()},
        intensifiers={fold(k): float(v) for k, v in data["intensifiers"].items()},
        negators=frozenset(fold(k) for k in data["negators"]),
    )


def _is_shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 4 and sum(c.isupper() for c in letters) / len(letters) >= 0.6


def sentiment_score(text: str) -> float:
    """Score in [-1, 1]; negative means angry/annoyed. See the module docstring for the rules."""
    lexicon = _lexicon()
    folded = fold(text)
    total = 0.0
    for pattern, score in lexicon.phrases:
        folded, count = pattern.subn(" . ", folded)
        total += score * count
    for emoji, score in lexicon.emojis.items():
        total += score * folded.count(emoji)

    tokens = _TOKEN.findall(folded)
    for i, token in enumerate(tokens):
        score = lexicon.word_score(token)
        if not score:
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in lexicon.intensifiers and lexicon.word_score(following):
            continue
        previous = tokens[i - 1] if i > 0 else ""
        score *= lexicon.intensifiers.get(previous, 1.0)
        window = []
        for candidate in reversed(tokens[max(0, i - _NEGATION_WINDOW) : i]):
            if not candidate.isalnum():
                break
            window.append(candidate)
        if lexicon.negators.intersection(window):
            score *= _NEGATED_POSITIVE if score > 0 else _NEGATED_NEGATIVE
        total += score

    if total:
        exclamations = min(text.count("!"), _MAX_EXCLAMATIONS)
        total += math.copysign(exclamations * _EXCLAMATION_STEP, total)
        if _is_shouting(text):
            total *= _SHOUT_FACTOR
    return total / math.sqrt(total * total + _SQUASH_ALPHA)


def is_negative(text: str, threshold: float = DEFAULT_NEGATIVE_THRESHOLD) -> bool:
    """True when the score is at or below ``-|threshold|`` (the sign is ignored: 0.5 and -0.5 mean the same)."""
    return sentiment_score(text) <= -abs(threshold)
