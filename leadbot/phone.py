"""Phone numbers: normalisation to E.164, the Rasa sender id, and masking for logs."""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "DE"
_SENDER_PREFIX = "wa"


class InvalidPhoneNumber(ValueError):
    pass


def normalize_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form of a phone number, accepting Twilio's `whatsapp:` prefix and local formats."""
    value = (raw or "").strip()
    if value.lower().startswith("whatsapp:"):
        value = value[len("whatsapp:") :]
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def sender_id_for(e164: str) -> str:
    """Rasa sender id for a contact: digits only, so it never needs percent-encoding in a URL path."""
    return f"{_SENDER_PREFIX}{e164.lstrip('+')}"


def e164_from_sender_id(sender_id: str) -> str:
    if not sender_id.startswith(_SENDER_PREFIX) or not sender_id[len(_SENDER_PREFIX) :].isdigit():
        raise InvalidPhoneNumber(f"not a leadbot sender id: {mask(sender_id)}")
    return "+" + sender_id[len(_SENDER_PREFIX) :]


_DIGIT_RUN = re.compile(r"\+?\d[\d ]{6,}\d")


def mask(text: str) -> str:
    """Mask phone numbers in free text for logs: keep the country prefix and the last two digits."""

    def _mask(match: re.Match[str]) -> str:
        digits = match.group(0).replace(" ", "")
        plus = "+" if digits.startswith("+") else ""
        digits = digits.lstrip("+")
        return f"{plus}{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"

    return _DIGIT_RUN.sub(_mask, text or "")
