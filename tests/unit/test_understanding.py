"""Table-driven tests for leadbot.domain.understanding (German lead answers)."""

from __future__ import annotations

import pytest

from leadbot.domain.lead_volume import bucket_for
from leadbot.domain.understanding import (
    HANDOVER_REASON_KEYWORD,
    LeadVolume,
    detect_contract_uncertainty,
    detect_handover_request,
    is_negative,
    is_opt_out,
    normalize_text,
    parse_ads_running,
    parse_lead_volume,
    parse_yes_no,
    sentiment_score,
)

# --- normalize_text --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ja   KLAR  ", "ja klar"),
        ("Fu\u0308nfzig", "fünfzig"),  # decomposed ü (macOS keyboards) becomes one code point
        ("Rückruf\n\tbitte", "rückruf bitte"),
        ("100–150", "100-150"),
        ("Okay 👍🏽", "okay 👍"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


# --- parse_yes_no ----------------------------------------------------------------------------------------------------

YES_NO_CASES = [
    # not knowing is no answer ("weiß ich echt nicht" once read as "no")
    ("weiß ich echt nicht", None),
    ("weiss ich leider nicht", None),
    # plain yes
    ("ja", "yes"),
    ("Ja", "yes"),
    ("JA!", "yes"),
    ("jaaa", "yes"),
    ("jo", "yes"),
    ("joa", "yes"),
    ("jap", "yes"),
    ("japp", "yes"),
    ("jep", "yes"),
    ("jup", "yes"),
    ("klar", "yes"),
    ("klaro", "yes"),
    ("gerne", "yes"),
    ("gern", "yes"),
    ("sehr gerne!", "yes"),
    ("passt", "yes"),
    ("passt schon", "yes"),
    ("sicher", "yes"),
    ("okay", "yes"),
    ("ok", "yes"),
    ("oki", "yes"),
    ("okey", "yes"),
    ("👍", "yes"),
    ("👍🏻", "yes"),
    ("✅", "yes"),
    ("yes", "yes"),
    ("yep", "yes"),
    ("na klar", "yes"),
    ("ja klar", "yes"),
    ("Ja, klar!", "yes"),
    ("auf jeden Fall", "yes"),
    ("auf jeden", "yes"),
    ("logo", "yes"),
    ("genau", "yes"),
    ("stimmt", "yes"),
    ("natürlich", "yes"),
    ("natuerlich", "yes"),
    ("selbstverständlich", "yes"),
    ("jawohl", "yes"),
    ("einverstanden", "yes"),
    ("klar, warum nicht", "yes"),
    ("warum nicht", "yes"),
    ("ja, kein Problem", "yes"),
    ("kein Thema", "yes"),
    ("machen wir", "yes"),
    ("ja, aber nicht so viele", "yes"),
    ("ja, leider nicht so viele", "yes"),
    ("ja, keine Ahnung wie viele genau", "yes"),
    ("ok 👍", "yes"),
    # plain no
    ("nein", "no"),
    ("Nein.", "no"),
    ("neeein", "no"),
    ("nee", "no"),
    ("neee", "no"),
    ("nö", "no"),
    ("noe", "no"),
    ("ne", "no"),
    ("ne, danke", "no"),
    ("nope", "no"),
    ("no", "no"),
    ("aktuell nicht", "no"),
    ("noch nicht", "no"),
    ("momentan nicht", "no"),
    ("derzeit nicht", "no"),
    ("im Moment nicht", "no"),
    ("eher nicht", "no"),
    ("wir haben pausiert", "no"),
    ("gar keine Werbung", "no"),
    ("keine ads", "no"),
    ("kein Interesse", "no"),
    ("leider keine", "no"),
    ("auf keinen Fall", "no"),
    ("niemals", "no"),
    ("👎", "no"),
    ("machen wir nicht", "no"),
    ("passt gerade nicht", "no"),
    ("sicher nicht", "no"),
    # negation beats positive words
    ("nicht wirklich", "no"),
    ("nein danke", "no"),
    ("leider nein", "no"),
    ("ok, nein", "no"),
    ("ja, aber gerade pausiert", "no"),
    ("ja früher, jetzt nicht mehr", "no"),
    ("nicht gut", "no"),
    ("nein, weiß nicht", "no"),
    # hedges and unrelated text
    ("vielleicht", None),
    ("ja vielleicht", None),
    ("jein", None),
    ("bin mir nicht sicher", None),
    ("kommt drauf an", None),
    ("mal sehen", None),
    ("weiß nicht", None),
    ("keine Ahnung", None),
    ("Was kostet das?", None),
    ("Was macht ihr genau?", None),
    ("Wie gut ist das?", None),
    ("Ist das sicher?", None),
    ("Hallo", None),
    ("150", None),
    ("", None),
    ("   ", None),
]


@pytest.mark.parametrize(("text", "expected"), YES_NO_CASES)
def test_parse_yes_no(text: str, expected: str | None) -> None:
    assert parse_yes_no(text) == expected


# --- parse_ads_running -----------------------------------------------------------------------------------------------

ADS_CASES = [
    ("ja", "yes"),
    ("jo, klar", "yes"),
    ("Meta und Google", "yes"),
    ("Facebook", "yes"),
    ("facebook und insta", "yes"),
    ("Insta", "yes"),
    ("Instagram", "yes"),
    ("TikTok", "yes"),
    ("LinkedIn Ads", "yes"),
    ("Google Ads läuft", "yes"),
    ("google ads laeuft", "yes"),
    ("YouTube und Google", "yes"),
    ("FB Ads", "yes"),
    ("die Ads laufen", "yes"),
    ("schalten wir", "yes"),
    ("Meta ja, Google nein", "yes"),
    ("Meta Ads und organisch Instagram", "yes"),
    ("nein", "no"),
    ("nö", "no"),
    ("wir haben pausiert", "no"),
    ("gerade pausiert", "no"),
    ("Facebook, aber gerade pausiert", "no"),
    ("gar keine Werbung", "no"),
    ("keine Werbung", "no"),
    ("nur organisch", "no"),
    ("nur organisch über Instagram", "no"),
    ("Instagram organisch", "no"),
    ("nur SEO", "no"),
    ("haben wir eingestellt", "no"),
    ("Google Ads läuft nicht", "no"),
    ("Facebook nicht mehr", "no"),
    ("aktuell nicht", "no"),
    ("gerade nicht", "no"),  # answers "aktuell?"
    ("Ads laufen gerade nicht", "no"),
    ("geht nicht, wir haben kein Budget", "no"),
    ("vielleicht", None),
    ("Hallo", None),
    ("Was macht ihr genau?", None),
    # not now (the "später" path), not "no ads": the lead must not be disqualified for being busy
    ("passt gerade nicht", None),
    ("jetzt passt es nicht", None),
    ("kann gerade nicht", None),
    ("heute klappt es nicht mehr", None),
    ("hab grad keine Zeit", None),
    ("heute nicht", None),
    # a question about us, not an answer ("läuft" means ads only in a statement or next to an ads noun)
    ("Wie läuft das ab?", None),
    ("Wie lange läuft der Vertrag?", None),
    ("Ja, läuft. Warum fragst du?", "yes"),
]


@pytest.mark.parametrize(("text", "expected"), ADS_CASES)
def test_parse_ads_running(text: str, expected: str | None) -> None:
    assert parse_ads_running(text) == expected


# --- parse_lead_volume -----------------------------------------------------------------------------------------------

VOLUME_CASES = [
    # exact digits and the bucket boundaries
    ("0", 0, "<100", "exact"),
    ("50", 50, "<100", "exact"),
    ("99", 99, "<100", "exact"),
    ("100", 100, "100-300", "exact"),
    ("150", 150, "100-300", "exact"),
    ("299", 299, "100-300", "exact"),
    ("300", 300, "300+", "exact"),
    ("301", 301, "300+", "exact"),
    ("150 Leads", 150, "100-300", "exact"),
    ("ja, so ca. 150 im Monat", 150, "100-300", "approx"),
    ("Wir haben 250 Anfragen im Monat.", 250, "100-300", "exact"),
    # German number words
    ("hundertfünfzig", 150, "100-300", "exact"),
    ("Hundertfünfzig", 150, "100-300", "exact"),
    ("zweihundert", 200, "100-300", "exact"),
    ("tausend", 1000, "300+", "exact"),
    ("neunundneunzig", 99, "<100", "exact"),
    ("hundert", 100, "100-300", "exact"),
    ("zweihundertneunundneunzig", 299, "100-300", "exact"),
    ("dreihundert", 300, "300+", "exact"),
    ("fünfzig", 50, "<100", "exact"),
    ("fuenfzig", 50, "<100", "exact"),
    ("zwei hundert", 200, "100-300", "exact"),
    ("anderthalbtausend", 1500, "300+", "exact"),
    ("eineinhalbtausend", 1500, "300+", "exact"),
    ("zweitausend", 2000, "300+", "exact"),
    ("so um die zweihundert", 200, "100-300", "approx"),
    ("etwa hundert", 100, "100-300", "approx"),
    ("ein paar hundert", 200, "100-300", "lower_bound"),
    ("Hunderte", 200, "100-300", "lower_bound"),
    # approximations keep the stated number
    ("ca. 150", 150, "100-300", "approx"),
    ("ca 150", 150, "100-300", "approx"),
    ("circa 120", 120, "100-300", "approx"),
    ("etwa 80", 80, "<100", "approx"),
    ("so um die 200", 200, "100-300", "approx"),
    ("rund 300", 300, "300+", "approx"),
    ("ungefähr 99", 99, "<100", "approx"),
    ("ungefaehr 100", 100, "100-300", "approx"),
    ("~150", 150, "100-300", "approx"),
    ("~ 300", 300, "300+", "approx"),
    ("so 100 rum", 100, "100-300", "approx"),
    ("150 oder so", 150, "100-300", "approx"),
    ("150 pro Monat ungefähr", 150, "100-300", "approx"),
    ("gefühlt 40", 40, "<100", "approx"),
    # knapp / fast: just under the stated number
    ("knapp 100", 95, "<100", "approx"),
    ("knapp 300", 285, "100-300", "approx"),
    ("fast 100", 95, "<100", "approx"),
    ("knapp 20", 19, "<100", "approx"),
    ("nicht ganz 300", 285, "100-300", "approx"),
    # comparisons
    ("über 100", 101, "100-300", "lower_bound"),
    ("über 99", 100, "100-300", "lower_bound"),
    ("über 299", 300, "300+", "lower_bound"),
    ("mehr als 300", 301, "300+", "lower_bound"),
    ("> 100", 101, "100-300", "lower_bound"),
    (">100", 101, "100-300", "lower_bound"),
    ("deutlich über 500", 501, "300+", "lower_bound"),
    ("mindestens 100", 100, "100-300", "lower_bound"),
    ("ab 300", 300, "300+", "lower_bound"),
    ("gut 200", 200, "100-300", "lower_bound"),
    ("200+", 200, "100-300", "lower_bound"),
    ("300 oder mehr", 300, "300+", "lower_bound"),
    ("unter 100", 99, "<100", "upper_bound"),
    ("unter 300", 299, "100-300", "upper_bound"),
    ("weniger als 50", 49, "<100", "upper_bound"),
    ("< 100", 99, "<100", "upper_bound"),
    ("keine 100", 99, "<100", "upper_bound"),
    ("nicht mal 50", 49, "<100", "upper_bound"),
    ("bis zu 300", 300, "300+", "upper_bound"),
    ("bis zu 99", 99, "<100", "upper_bound"),
    ("maximal 80", 80, "<100", "upper_bound"),
    ("höchstens 150", 150, "100-300", "upper_bound"),
    ("nicht mehr als 200", 200, "100-300", "upper_bound"),
    ("nicht weniger als 100", 100, "100-300", "lower_bound"),
    ("knapp über 100", 101, "100-300", "lower_bound"),
    ("knapp unter 100", 99, "<100", "upper_bound"),
    # ranges use the midpoint, half up
    ("zwischen 100 und 200", 150, "100-300", "range"),
    ("zwischen hundert und zweihundert", 150, "100-300", "range"),
    ("50-60", 55, "<100", "range"),
    ("50 bis 60", 55, "<100", "range"),
    ("100–150", 125, "100-300", "range"),
    ("100 - 150", 125, "100-300", "range"),
    ("fünfzig bis sechzig", 55, "<100", "range"),
    ("zwanzig-dreißig", 25, "<100", "range"),
    ("99-100", 100, "100-300", "range"),
    ("90-100", 95, "<100", "range"),
    ("250-350", 300, "300+", "range"),
    ("200 bis 398", 299, "100-300", "range"),
    ("ca. 150-200", 175, "100-300", "range"),
    ("1-2k", 1500, "300+", "range"),
    ("1.000 bis 2.000", 1500, "300+", "range"),
    ("80 oder 90", 85, "<100", "range"),
    # thousands separators and k
    ("1.500", 1500, "300+", "exact"),
    ("2.000", 2000, "300+", "exact"),
    ("1 500", 1500, "300+", "exact"),
    ("1,5k", 1500, "300+", "exact"),
    ("1.5k", 1500, "300+", "exact"),
    ("2k", 2000, "300+", "exact"),
    ("ca 2 tsd", 2000, "300+", "approx"),
    ("3 tausend", 3000, "300+", "exact"),
    # other periods
    ("5 pro Woche", 22, "<100", "exact"),
    ("25 pro Woche", 108, "100-300", "exact"),
    ("fünfzig pro Woche", 217, "100-300", "exact"),
    ("23 die Woche", 100, "100-300", "exact"),
    ("10 am Tag", 300, "300+", "exact"),
    ("täglich 10", 300, "300+", "exact"),
    ("taeglich 3", 90, "<100", "exact"),
    ("zwei am Tag", 60, "<100", "exact"),
    ("einen Lead pro Tag", 30, "<100", "exact"),
    ("1,5 pro Tag", 45, "<100", "exact"),
    ("ca. 5 am Tag", 150, "100-300", "approx"),
    ("10/Tag", 300, "300+", "exact"),
    ("1200 pro Jahr", 100, "100-300", "exact"),
    ("1000 im Jahr", 83, "<100", "exact"),
    ("jährlich 3.600", 300, "300+", "exact"),
    ("600 pro Quartal", 200, "100-300", "exact"),
    ("20-30 pro Woche", 108, "100-300", "range"),
    ("150/Monat", 150, "100-300", "exact"),
    ("letztes Jahr 2400 insgesamt", 200, "100-300", "exact"),
    ("letzte Woche 30", 130, "100-300", "exact"),
    ("so 10-15 täglich", 375, "300+", "range"),
    ("ca. 30 Leads pro Woche, davon 10 qualifiziert", 130, "100-300", "approx"),
    ("seit Januar 2024 ca 200/Monat", 200, "100-300", "approx"),
    # years, money, durations and other counts are not volumes
    ("im Jahr 2024 ca. 150 im Monat", 150, "100-300", "approx"),
    ("seit 2020 ca. 80", 80, "<100", "approx"),
    ("2023 hatten wir 120", 120, "100-300", "exact"),
    ("2000", 2000, "300+", "exact"),
    ("ca. 5000€ Budget, 80 Leads", 80, "<100", "exact"),
    ("bei 3.000 Euro Budget so 200", 200, "100-300", "approx"),
    ("3 Kampagnen, ca. 150 Leads", 150, "100-300", "approx"),
    ("wir sind 5 Mitarbeiter und haben 60 Anfragen", 60, "<100", "exact"),
    ("seit 3 Monaten etwa 120", 120, "100-300", "approx"),
    ("20 % mehr als letztes Jahr, also 150", 150, "100-300", "exact"),
    ("am 12.05. waren es 40", 40, "<100", "exact"),
    # typos and emojis around the number
    ("ca.150", 150, "100-300", "approx"),
    ("so ca 200 🙂", 200, "100-300", "approx"),
    ("🚀 300+", 300, "300+", "lower_bound"),
    # first lead-noun number wins over the first number
    ("2 Accounts, 40 Leads", 40, "<100", "exact"),
    ("letzten Monat 120, davor 80", 120, "100-300", "exact"),
    # zero
    ("puh, keine Ahnung, vielleicht 70?", 70, "<100", "approx"),
    ("mehr als hundert", 101, "100-300", "lower_bound"),
    ("weniger als hundert", 99, "<100", "upper_bound"),
    ("knapp dreihundert", 285, "100-300", "approx"),
    ("+- 150", 150, "100-300", "approx"),
    ("12 000", 12000, "300+", "exact"),
    ("10.000", 10000, "300+", "exact"),
    ("keine", 0, "<100", "exact"),
    ("null", 0, "<100", "exact"),
    ("noch keine Leads", 0, "<100", "exact"),
    ("gar keine", 0, "<100", "exact"),
    ("leider keine 😅", 0, "<100", "exact"),
    ("keine, wir fangen gerade erst an", 0, "<100", "exact"),
    ("aktuell noch keine Anfragen", 0, "<100", "exact"),
    ("keine einzige Anfrage bisher", 0, "<100", "exact"),
    ("null im Monat", 0, "<100", "exact"),
    ("nix", 0, "<100", "exact"),
    ("kein Problem, so 150", 150, "100-300", "approx"),  # the idiom is not "zero leads"
]


@pytest.mark.parametrize(("text", "estimate", "bucket", "kind"), VOLUME_CASES)
def test_parse_lead_volume(text: str, estimate: int, bucket: str, kind: str) -> None:
    assert parse_lead_volume(text) == LeadVolume(monthly_estimate=estimate, bucket=bucket, kind=kind)


@pytest.mark.parametrize(
    "text",
    ["keine Ahnung", "weiß nicht", "weiss nicht", "k.A.", "ka", "k. A.", "schwer zu sagen", "kein Plan", "🤷‍♂️"],
)
def test_parse_lead_volume_unknown(text: str) -> None:
    assert parse_lead_volume(text) == LeadVolume(monthly_estimate=None, bucket="unknown", kind="unknown")


@pytest.mark.parametrize(
    "text",
    [
        "Hallo", "ja", "Was kostet das?", "", "viele", "kein Problem", "kein Thema",
        # "keine" with another noun is no lead volume (was read as zero leads and disqualified the lead)
        "hab grad keine Zeit", "gerade keine Zeit, später", "keine Lust", "null Bock", "kein Stress",
        "tausend Dank", "Tausend Dank!",  # thanks, not 1,000 leads
    ],
)
def test_parse_lead_volume_not_understood(text: str) -> None:
    assert parse_lead_volume(text) is None


@pytest.mark.parametrize(
    ("monthly", "bucket"), [(0, "<100"), (99, "<100"), (100, "100-300"), (299, "100-300"), (300, "300+")]
)
def test_bucket_boundaries(monthly: int, bucket: str) -> None:
    assert bucket_for(monthly) == bucket


def test_tables_have_no_duplicate_phrasings() -> None:
    # A duplicated row would silently shrink the coverage the tables claim.
    for table in (YES_NO_CASES, ADS_CASES, VOLUME_CASES):
        phrasings = [case[0] for case in table]
        assert len(set(phrasings)) == len(phrasings)
    assert len({case[0] for case in YES_NO_CASES + ADS_CASES + VOLUME_CASES}) >= 150


# --- detect_handover_request -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Mitarbeiter",
        "Kann ich mit einem Mitarbeiter sprechen?",
        "Berater bitte",
        "Ich hätte gerne eine Beraterin",
        "Anrufen",
        "kannst du mich anrufen?",
        "Können Sie mich morgen kurz anrufen?",
        "ruf mich an",
        "ruft mich bitte kurz an",
        "Rückruf bitte",
        "Rueckruf",
        "bitte zurückrufen",
        "ich will mit einem Menschen sprechen",
        "Mensch bitte",
        "gibt es hier eine echte Person?",
        "ich würde lieber persönlich sprechen",
        "können wir telefonieren?",
        "lieber telefonisch",
        "kann mich ein Kollege von dir kontaktieren?",
        "Kollegen",
        "ich will keinen Bot",
        "ich will nicht mit einem Bot schreiben",
        "kann ich mit jemandem sprechen?",
    ],
)
def test_handover_requested(text: str) -> None:
    assert detect_handover_request(text) == HANDOVER_REASON_KEYWORD


@pytest.mark.parametrize(
    "text",
    [
        "ja, ca. 150",
        "Was kostet das?",
        "bitte nicht anrufen",
        "ruf mich nicht an",
        "kein Rückruf nötig",
        "Rückruf nicht nötig",
        "wir haben 5 Mitarbeiter",
        "unsere Mitarbeiter machen das",
        "ich bin Berater",
        "ich muss erst meine Kollegen fragen",
        "Bist du ein Mensch?",
        "Mensch, das dauert ja",
        "wir helfen Menschen beim Abnehmen",
        "",
    ],
)
def test_no_handover(text: str) -> None:
    assert detect_handover_request(text) is None


# --- detect_contract_uncertainty -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Gibt es Sonderkonditionen?",
        "Bekommen wir einen Rabatt für uns?",
        "Mengenrabatt möglich?",
        "Ich hätte gerne ein individuelles Angebot",
        "Können wir den Vertrag anpassen?",
        "Kann man die Kündigungsfrist verhandeln?",
        "Geht eine kürzere Laufzeit?",
        "Rechnung auf eine andere Firma möglich?",
        "Können wir die AGB ändern?",
        "Geht preislich noch was?",
        "Ist der Preis verhandelbar?",
        "Könnt ihr mir garantieren, dass wir 200 Leads bekommen?",
        "Geht das auch günstiger?",
        "Zahlung in Raten?",
    ],
)
def test_contract_uncertainty(text: str) -> None:
    assert detect_contract_uncertainty(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "Was kostet das?",
        "Wie teuer ist das im Monat?",
        "Wie lange ist die Kündigungsfrist?",
        "Ist der Preis etwas höher als bei anderen?",
        "Was ist im Paket enthalten?",
        "ja",
    ],
)
def test_no_contract_uncertainty(text: str) -> None:
    assert detect_contract_uncertainty(text) is False


# --- sentiment -------------------------------------------------------------------------------------------------------

CLEARLY_NEGATIVE = [
    "nervig",
    "Das ist Spam",
    "Abzocke!",
    "unverschämt",
    "lasst mich in Ruhe",
    "wollt ihr mich verarschen?",
    "scheiße",
    "so ein Scheiß",
    "ihr nervt total",
    "was soll das 😡",
    "🤬",
    "👎👎",
    "😤",
    "total aufdringlich",
    "SPAM!!!",
    "woher habt ihr meine Nummer?",
]


@pytest.mark.parametrize("text", CLEARLY_NEGATIVE)
def test_clearly_negative(text: str) -> None:
    assert sentiment_score(text) <= -0.5
    assert is_negative(text)


@pytest.mark.parametrize(
    "text", ["ja, ca. 150 Leads", "Was kostet das?", "nein", "Meta und Google", "zwischen 100 und 200", "ok"]
)
def test_neutral_business_answers(text: str) -> None:
    assert abs(sentiment_score(text)) < 0.2
    assert not is_negative(text)


@pytest.mark.parametrize("text", ["super, danke!", "klingt gut 👍", "sehr gut", "🙂", "perfekt, freue mich"])
def test_positive(text: str) -> None:
    assert sentiment_score(text) > 0.3


def test_intensifier_makes_stronger() -> None:
    assert sentiment_score("total nervig") < sentiment_score("nervig") < 0
    assert sentiment_score("sehr gut") > sentiment_score("gut") > 0


def test_negation_flips() -> None:
    assert sentiment_score("gut") > 0 > sentiment_score("nicht gut")
    assert sentiment_score("nicht schlecht") > 0 > sentiment_score("schlecht")


def test_exclamation_and_caps_amplify() -> None:
    assert sentiment_score("Spam!!!") < sentiment_score("Spam") < 0
    assert sentiment_score("ABZOCKE") < sentiment_score("abzocke")


def test_emoji_polarity() -> None:
    assert sentiment_score("🙂") > 0 > sentiment_score("😡")


def test_umlaut_free_spelling_matches() -> None:
    assert sentiment_score("unverschaemt") == sentiment_score("unverschämt") < -0.5


def test_score_is_bounded() -> None:
    assert -1 <= sentiment_score("Abzocke!!! Spam!!! Betrug!!! 🤬🤬🤬 SCHEISSE") <= 1
    assert -1 <= sentiment_score("super toll genial perfekt 😍😍😍!!!") <= 1


def test_is_negative_threshold_sign_is_ignored() -> None:
    assert is_negative("nicht gut", 0.3) and is_negative("nicht gut", -0.3)
    assert not is_negative("nicht gut", 0.9)


# --- is_opt_out ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "Stop",
        "stop",
        "Stopp",
        "STOPP!",
        "stopp bitte",
        "Abmelden",
        "bitte abmelden",
        "abbestellen",
        "unsubscribe",
        "keine Nachrichten mehr",
        "Ich will keine Nachrichten von euch",
        "bitte nicht mehr schreiben",
        "schreibt mir nicht mehr",
        "löscht meine Nummer",
        "loescht meine Nummer",
        "bitte löscht sofort meine Daten",
        "wie kann ich mich abmelden?",
        "tragt mich aus",
        "lasst mich in Ruhe",
        "ich widerrufe meine Einwilligung",
        "stop stop stop",
    ],
)
def test_opt_out(text: str) -> None:
    assert is_opt_out(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "stoppt ihr die Ads?",
        "Stop, falsche Zahl, ich meinte 150",
        "wir haben die Ads gestoppt",
        "ich habe keine Nachrichten bekommen",
        "nein",
        "kein Interesse",
        "Was kostet das?",
        "",
    ],
)
def test_not_opt_out(text: str) -> None:
    assert is_opt_out(text) is False
