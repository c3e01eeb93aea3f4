"""Text normalisation shared by the German understanding rules (pure functions, no I/O)."""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Typographic variants people's keyboards produce; matching rules only know the ASCII forms.
_PUNCT_MAP = str.maketrans({"’": "'", "‘": "'", "´": "'", "`": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-"})
_UMLAUT_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
# Emoji presentation selector and skin tones: "👍🏽" must match "👍".
_EMOJI_MODIFIERS = re.compile("[\ufe0f\ufe0e\U0001f3fb-\U0001f3ff]")


def normalize_text(text: str) -> str:
    """NFC-normalise, unify dashes/quotes, drop emoji modifiers, collapse whitespace, trim and lowercase.

    Umlauts and ß are preserved (``"Fünfzig"`` -> ``"fünfzig"``) so number words still parse.
    """
    text = unicodedata.normalize("NFC", text or "").translate(_PUNCT_MAP)
    text = _EMOJI_MODIFIERS.sub("", text)
    return _WHITESPACE.sub(" ", text).strip().lower()


def fold(text: str) -> str:
    """``normalize_text`` plus umlaut folding (ä->ae, ö->oe, ü->ue, ß->ss).

    Matching rules are written against this form so "Rückruf" and "Rueckruf" (phones without umlauts) are equal.
    """
    return normalize_text(text).translate(_UMLAUT_FOLD)
