"""Interpret what a lead typed in colloquial German (pure functions, no I/O).

Used by the Rasa custom actions (form validation, handover checks). All matching runs on ``fold(text)``: NFC,
lowercase, collapsed whitespace, umlauts folded (ä -> ae, ß -> ss) so "Rückruf" and "Rueckruf" match alike.

* ``parse_yes_no``: hedges ("vielleicht", "jein", "nicht sicher") -> None; "keine Ahnung"/"weiß nicht" are dropped
  first; then a negation anywhere beats a positive word ("ja, aber pausiert" -> "no"), except idioms that contain a
  negation but mean yes ("warum nicht", "kein Problem").
* ``parse_ads_running``: ad-specific "no" ("pausiert", "nur organisch", "keine Werbung") first, then an explicitly
  affirmed platform ("Meta ja, Google nein" -> "yes"), then ``parse_yes_no``'s "no", then platform names or
  "läuft"/"schalten" -> "yes".
* ``parse_lead_volume``: see ``leadbot.domain.lead_volume`` (boundary rules) and docs/understanding.md.
* ``detect_handover_request``: keywords of the product plan (Mitarbeiter, Berater, Anrufen, ...); negated ones
  ("bitte nicht anrufen") and the lead's own staff ("unsere Mitarbeiter", "ich bin Berater") do not count.
* ``detect_contract_uncertainty``: requests for individual terms a bot must not answer bindingly.
* ``sentiment_score``/``is_negative``: see ``leadbot.domain.sentiment``.
* ``is_opt_out``: conservative; the whole message is an opt-out keyword, or it contains an unambiguous phrase.
"""

from __future__ import annotations

import re
from typing import Literal

from leadbot.domain.lead_volume import LeadVolume, parse_lead_volume
from leadbot.domain.sentiment import is_negative, sentiment_score
from leadbot.domain.text import fold, normalize_text

__all__ = [
    "HANDOVER_REASON_KEYWORD",
    "LeadVolume",
    "YesNo",
    "detect_contract_uncertainty",
    "detect_handover_request",
    "is_negative",
    "is_opt_out",
    "normalize_text",
    "parse_ads_running",
    "parse_lead_volume",
    "parse_yes_no",
    "sentiment_score",
]

YesNo = Literal["yes", "no"]
HANDOVER_REASON_KEYWORD = "keyword"


def _rx(*alternatives: str) -> re.Pattern[str]:
    """One pattern from word-bounded alternatives (written in folded form)."""
    return re.compile("|".join(rf"(?<![a-z0-9])(?:{a})(?![a-z0-9])" for a in alternatives))


# --- yes / no --------------------------------------------------------------------------------------------------------
_HEDGE = _rx(
    r"vielleicht",
    r"eventuell",
    r"evtl\.?",
    r"vllt\.?",
    r"womoeglich",
    r"moeglicherweise",
    r"jein",
    r"unsicher",
    r"(?:bin\s+(?:mir\s+)?)?nicht\s+(?:so\s+|ganz\s+)?sicher",
    r"mal\s+(?:sehen|schauen|gucken)",
    r"kommt\s+(?:drauf|darauf)\s+an",
    r"weiss\s+(?:ich\s+)?noch\s+nicht",
)
_UNKNOWN = _rx(
    r"keine\s+ahnung",
    r"kein(?:en)?\s+plan",
    # "weiß ich nicht", "weiß ich echt/leider/gerade nicht": not knowing is no answer, not a "no".
    r"(?:ich\s+)?wei(?:ss|s)\s+(?:ich\s+|es\s+)*(?:\w+\s+)?nicht",
    r"k\.?\s?a\.?",
)
# Contain a negation word but mean yes.
_POSITIVE_IDIOMS = _rx(
    r"(?:warum|wieso|weshalb)\s+(?:auch\s+)?nicht",
    r"kein(?:e)?\s+(?:problem|thema|frage|ding)",
    r"nichts\s+dagegen",
    r"no\s+problem",
)
_NEGATIVE = _rx(
    r"ne+i+n+",
    r"nee+",
    r"noe+",
    r"no+",
    r"nope",
    r"^ne",
    r"nie(?:mals)?",
    r"auf\s+keinen\s+fall",
    r"keinesfalls",
    r"negativ",
    r"pausiert",
    r"nicht\s+(?:wirklich|unbedingt|mehr|so\s+richtig)",
    # "leider nicht" is a no, "leider nicht so viele" is a reluctant yes.
    r"(?:eher|leider|gar|noch|aktuell|momentan|derzeit|zurzeit|zur\s+zeit|gerade|grad|im\s+moment|jetzt|bisher"
    r"|ueberhaupt|definitiv|sicher|absolut)\s+nicht(?!\s+(?:so\s+)?(?:viele?|genug|oft|sehr|besonders)\b)",
    r"nicht(?=\s*(?:[,.;!?)]|$))",
    r"nicht\s+(?:so\s+|ganz\s+|wirklich\s+)?(?:gut|ok|okay|gerne?|klar|richtig|korrekt)",
    r"kein(?:e|en)?\s+(?:interesse|bedarf|ads|werbung|anzeigen|kampagnen)",
    r"gar\s+kein\w*",
    r"kein(?:e|en)?(?=\s*(?:[,.;!?]|$))",
)
_NEGATIVE_EMOJI = re.compile("[👎❌🙅]")
_POSITIVE = _rx(
    r"ja+",
    r"jo+a?",
    r"ja+p+",
    r"je+p+",
    r"ju+p+",
    r"ye+s+",
    r"ye+p+",
    r"yup",
    r"yeah",
    r"sure",
    r"jawoh?l+",
    r"kla+r+(?:o|i)?",
    r"ge+rn+e*",
    r"pa+ss+t",
    r"o+k+(?:a+y+|e+y*|i+)?",
    r"okidoki",
    r"logo",
    # Adverbs elsewhere in a sentence ("Was macht ihr genau?"), agreement only at the start.
    r"^(?:ganz\s+|na\s+)?(?:sicher(?:lich)?|genau|richtig|korrekt|stimmt|absolut|definitiv|bestimmt|durchaus|gut)",
    r"natuerlich",
    r"selbstverstaendlich",
    r"einverstanden",
    r"auf\s+jeden(?:\s+fall)?",
    r"immer\s+doch",
    r"(?:machen|tun|haben)\s+wir",
    r"mach(?:e)?\s+ich",
)
_POSITIVE_EMOJI = re.compile("[👍✅👌🙋💪]")


def parse_yes_no(text: str) -> YesNo | None:
    """ "yes"/"no" for a colloquial answer, None when it hedges, is empty or answers something else."""
    folded = fold(text)
    if not folded or _HEDGE.search(folded):
        return None
    folded = _UNKNOWN.sub(" ", folded)
    folded, idioms = _POSITIVE_IDIOMS.subn(" ", folded)
    folded = folded.strip()
    if _NEGATIVE.search(folded) or _NEGATIVE_EMOJI.search(folded):
        return "no"
    if idioms or _POSITIVE.search(folded) or _POSITIVE_EMOJI.search(folded):
        return "yes"
    return None


# --- ads running -----------------------------------------------------------------------------------------------------
_PLATFORM = (
    r"meta|facebook|fb|insta(?:gram)?|ig|google(?:\s+ads)?|adwords|youtube|yt|tiktok|tik\s+tok|linkedin|pinterest"
    r"|snapchat|bing|microsoft\s+ads|xing|twitter|taboola|outbrain|amazon\s+ads|sea|ppc|pmax|performance\s+max"
)
_PLATFORM_RX = _rx(_PLATFORM)
_ADS_NO = _rx(
    r"pausiert",
    r"gestoppt",
    r"abgeschaltet",
    r"ausgeschaltet",
    r"eingestellt",
    r"aufgehoert",
    r"(?:gar\s+)?kein(?:e|en)?\s+(?:bezahlte\s+)?(?:werbung|ads|anzeigen|kampagnen|budget)",
    r"(?:nur|rein|ausschliesslich|bloss|lediglich)\s+(?:organisch|seo|empfehlungen?|mundpropaganda)",
)
# "Instagram organisch" is no, "Meta Ads und organisch Instagram" is yes: organic counts only without paid words.
_ORGANIC = _rx(r"organisch\w*")
_PAID = _rx(r"ads", r"werbung", r"anzeigen?", r"kampagnen?", r"bezahlt\w*", r"paid", r"laeuft", r"laufen", r"schalten")
_ADS_AFFIRMED_PLATFORM = re.compile(
    rf"(?<![a-z0-9])(?:{_PLATFORM})(?:\s+ads)?\s*[:=-]?\s*(?:ja|laeuft|laufen|aktiv)(?![a-z0-9])(?!\s+nicht)"
)
_ADS_YES = _rx(r"laeuft", r"laufen", r"schalten", r"schalte", r"aktiv")
_ADS_NOUN = _rx(r"ads", r"werbung", r"anzeigen?", r"kampagnen?")
# "Passt gerade nicht", "keine Zeit" to Q1 is about the moment, not about ads: no answer (the "später" path),
# not "no ads" (which would disqualify the lead). "Gerade nicht" alone stays "no": it answers "aktuell?".
_NOT_NOW = _rx(
    r"(?:passt|klappt|geht|kann|schaffe?)\s+(?:\w+\s+){0,2}?nicht",
    r"(?:keine|kaum|wenig)\s+zeit",
    r"heute\s+nicht",
    r"nicht\s+heute",
)


def parse_ads_running(text: str) -> YesNo | None:
    """Answer to "Schaltest du aktuell Ads?"; platform names count as yes, paused/organic-only as no."""
    folded = fold(text)
    if not folded or _HEDGE.search(folded):
        return None
    if _ADS_NO.search(folded) or (_ORGANIC.search(folded) and not _PAID.search(folded)):
        return "no"
    if _NOT_NOW.search(folded) and not (_PLATFORM_RX.search(folded) or _PAID.search(folded)):
        return None
    if _ADS_AFFIRMED_PLATFORM.search(folded):
        return "yes"
    answer = parse_yes_no(text)
    if answer == "no":
        return "no"
    if _PLATFORM_RX.search(folded):
        return "yes"
    # "Wie läuft das ab?" asks about us: "läuft" means running ads only in a statement or next to an ads noun.
    if _ADS_YES.search(folded) and (not folded.rstrip().endswith("?") or _ADS_NOUN.search(folded)):
        return "yes"
    return answer


# --- handover --------------------------------------------------------------------------------------------------------
# "Bist du ein Mensch?" asks about the bot's identity (answered transparently), it is not a request for a human.
_IDENTITY_QUESTION = _rx(
    r"(?:bist\s+du|sind\s+sie|seid\s+ihr|ist\s+das)\s+(?:hier\s+)?(?:eine?n?\s+)?(?:echte[rn]?\s+)?"
    r"(?:mensch|person|bot|roboter|ki|maschine)"
)
# Keywords whose negation ("bitte nicht anrufen") or ownership ("unsere Mitarbeiter") cancels them.
_HANDOVER_KEYWORDS = re.compile(
    r"(?<![a-z0-9])(?:"
    r"(?P<staff>mitarbeiter(?:in|innen)?|berater(?:in|innen)?|kolleg(?:e|en|in|innen))"
    r"|anruf(?:e|en|st|t)?|anzurufen|ruf(?:e|t|en|st)?\s+(?:\w+\s+){0,3}?an"
    r"|rueckruf\w*|zurueck(?:rufen|ruft|rufst|zurufen)"
    r"|telefon(?:ieren|iert|isch|at)|am\s+telefon"
    r"|(?:einem|einen|nem|ein|echte[nrm]?|richtige[nrm]?|reale[nrm]?|lebendige[nrm]?)\s+mensch(?:en)?"
    r"|mensch(?:en)?\s+(?:sprechen|reden|bitte)|^mensch(?:en)?\s*[?.]*$"
    r"|(?:echte[nrm]?|reale[nrm]?|richtige[nrm]?|lebendige[nrm]?)\s+(?:person|ansprechpartner\w*)"
    r"|persoenlich\w*\s+(?:sprechen|reden|beraten|ansprechpartner\w*|gespraech|kontakt)"
    r"|(?:sprechen|reden)\s+persoenlich|ansprechpartner\w*"
    r"|mit\s+jemandem\s+(?:\w+\s+)?(?:sprechen|reden|telefonieren)"
    r")(?![a-z0-9])"
)
_HANDOVER_EXPLICIT = _rx(
    r"kein(?:en|e)?\s+(?:chat)?bot",
    r"kein(?:en|e)?\s+(?:roboter|ki|maschine)",
    r"nicht\s+mit\s+(?:einem\s+|einer\s+|nem\s+)?(?:chat)?(?:bot|roboter|ki|maschine)",
)
_NEGATED_BEFORE = re.compile(r"(?<![a-z0-9])(?:nicht|kein\w*|ohne|nie)\s+(?:\w+\s+){0,2}$")
_NEGATED_INSIDE = re.compile(r"(?<![a-z0-9])nicht(?![a-z0-9])")
_NEGATED_AFTER = re.compile(r"^\s*(?:\w+\s+)?(?:nicht\s+(?:noetig|notwendig|erforderlich)|unnoetig)")
_OWN_STAFF_BEFORE = re.compile(
    r"(?<![a-z0-9])(?:mein\w*|unser\w*|\d+|viele|paar|wenige|alle|bin|als|sind|arbeite)\s+(?:\w+\s+)?$"
)
_INTERJECTION = re.compile(r"^mensch\s*[,!]")


def detect_handover_request(text: str) -> str | None:
    """Reason code (``HANDOVER_REASON_KEYWORD``) when the lead asks for a human, else None."""
    folded = _IDENTITY_QUESTION.sub(" ", _INTERJECTION.sub(" ", fold(text)))
    if _HANDOVER_EXPLICIT.search(folded):
        return HANDOVER_REASON_KEYWORD
    for match in _HANDOVER_KEYWORDS.finditer(folded):
        before, after = folded[: match.start()], folded[match.end() :]
        if _NEGATED_BEFORE.search(before) or _NEGATED_INSIDE.search(match.group()) or _NEGATED_AFTER.match(after):
            continue
        if match.group("staff") and _OWN_STAFF_BEFORE.search(before):
            continue
        return HANDOVER_REASON_KEYWORD
    return None


# --- price / contract beyond the standard offer ---------------------------------------------------------------------
_CONTRACT = _rx(
    r"sonder(?:kondition|preis|konditionen|vereinbarung)\w*",
    r"\w*rabatt\w*",
    r"nachlass\w*",
    r"skonto",
    r"verhandel\w*|verhandl\w*",
    r"individuell\w*\s+(?:\w+\s+)?(?:angebot|preis\w*|konditionen|vertrag\w*|laufzeit|paket|tarif)",
    r"(?:extra|eigene|spezielle)\s+konditionen",
    r"angebot\s+(?:nur\s+)?fuer\s+(?:uns|mich|unsere?\s+(?:firma|agentur|gruppe))",
    r"vertrag\w*\s+(?:\w+\s+){0,2}(?:anpassen|aendern|umschreiben|verkuerzen)",
    r"(?:anpassung|aenderung)\w*\s+(?:\w+\s+){0,2}vertrag\w*",
    r"vertragsaenderung\w*|vertragsanpassung\w*",
    r"kuendigungsfrist\w*\s+(?:\w+\s+){0,3}(?:verhandeln|verkuerzen|aendern|anpassen|streichen)",
    r"kuerzere\s+(?:kuendigungsfrist|laufzeit|bindung)",
    r"laufzeit\s+(?:\w+\s+){0,2}(?:verkuerzen|aendern|anpassen)",
    r"ohne\s+mindestlaufzeit",
    r"rechnung\s+(?:\w+\s+){0,2}(?:auf|an)\s+(?:\w+\s+){0,2}(?:andere|anderen|tochter\w*|schwester\w*)",
    r"agbs?\s+(?:\w+\s+){0,2}(?:aendern|anpassen|streichen)",
    r"(?:aendern|anpassen)\s+(?:\w+\s+){0,2}agbs?",
    r"garantie\w*|garantier\w*",
    r"geld[\s-]zurueck|rueckerstattung|erstattung",
    r"ratenzahlung|in\s+raten|zahlungsziel|zahlungsaufschub|stundung",
    r"guenstiger|billiger",
    r"preislich\s+(?:noch\s+)?(?:was|etwas)|(?:am|beim)\s+preis\s+(?:noch\s+)?(?:was|etwas)",
    r"preis\s+(?:noch\s+)?(?:was|etwas)\s+(?:machen|runter|drin)",
    r"entgegenkommen",
    r"exklusiv\w*",
    r"vertragsstrafe|haftung\w*",
    r"einen\s+deal",
)


def detect_contract_uncertainty(text: str) -> bool:
    """True for individual price/contract requests the bot must hand to a human; plain price questions are False."""
    return bool(_CONTRACT.search(fold(text)))


# --- opt-out ---------------------------------------------------------------------------------------------------------
_OPT_OUT_KEYWORDS = frozenset(
    {
        "stop",
        "stopp",
        "stoppen",
        "stopall",
        "abmelden",
        "abmeldung",
        "abbestellen",
        "unsubscribe",
        "austragen",
        "optout",
        "opt out",
        "opt-out",
    }
)
_OPT_OUT_FILLER = _rx(r"bitte", r"danke", r"jetzt", r"sofort", r"einfach", r"endlich", r"mal", r"hallo", r"hi")
_OPT_OUT_PHRASES = _rx(
    r"keine\s+(?:weiteren\s+)?(?:nachrichten|whatsapps?|messages)\s+mehr",
    r"keine\s+weiteren\s+(?:nachrichten|whatsapps?|messages)",
    r"(?:will|moechte|moechten|wollen)\s+keine\s+(?:\w+\s+)?(?:nachrichten|whatsapps?|messages)",
    r"(?:nicht|nie)\s+mehr\s+(?:an)?(?:schreiben|kontaktieren|melden|anrufen)",
    r"(?:schreib|kontaktier)\w*\s+(?:mir|mich|uns)\s+(?:bitte\s+)?(?:nicht|nie)\s+mehr",
    r"loesch\w*\s+(?:bitte\s+)?(?:sofort\s+)?(?:meine|unsere)\s+(?:\w+\s+)?(?:nummer|daten|kontaktdaten)",
    r"(?:meine|unsere)\s+(?:nummer|daten|kontaktdaten)\s+(?:\w+\s+)?loeschen",
    r"unsubscribe",
    r"abbestell\w*",
    r"opt[\s-]?out",
    r"(?:mich|uns)\s+(?:bitte\s+)?(?:abmelden|austragen)",
    r"trag\w*\s+(?:mich|uns)\s+(?:bitte\s+)?aus",
    r"meld\w*\s+(?:mich|uns)\s+(?:bitte\s+)?ab",
    r"(?:lasst|lass|lassen\s+sie)\s+mich\s+in\s+ruhe",
    r"widerrufe?\s+(?:hiermit\s+)?(?:meine\s+)?(?:einwilligung|zustimmung|einverstaendnis)",
)


def is_opt_out(text: str) -> bool:
    """True when the lead unambiguously wants no more messages ("STOP", "bitte nicht mehr schreiben")."""
    folded = fold(text)
    bare = " ".join(re.findall(r"[a-z-]+", _OPT_OUT_FILLER.sub(" ", folded)))
    # "stop stop stop" is still just stop.
    if bare and (bare in _OPT_OUT_KEYWORDS or set(bare.split()) <= _OPT_OUT_KEYWORDS):
        return True
    return bool(_OPT_OUT_PHRASES.search(folded))
