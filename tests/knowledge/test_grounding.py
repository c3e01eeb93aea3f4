from leadbot.knowledge.grounding import ungrounded_claims

EVIDENCE = "Das Paket Pro kostet 1.490 € pro Monat. Die Prüfung dauert 24 bis 48 Stunden. Verfügbarkeit 99,5 %."


def test_numbers_from_the_evidence_pass_in_any_notation():
    assert ungrounded_claims("Pro kostet 1490 € im Monat, die Verfügbarkeit liegt bei 99,5 %.", EVIDENCE) == []
    assert ungrounded_claims("Das dauert meist 24–48 Stunden.", EVIDENCE) == []


def test_invented_numbers_and_prices_are_reported():
    assert ungrounded_claims("Pro kostet nur 1.290 € pro Monat.", EVIDENCE) == ["1290"]
    assert ungrounded_claims("Die Prüfung dauert drei Tage.", EVIDENCE) == ["3"]


def test_promises_without_backing_are_reported():
    assert ungrounded_claims("Die Einrichtung ist kostenlos und garantiert in einer Woche fertig.", EVIDENCE) == [
        "garant", "kostenlos",
    ]
    assert ungrounded_claims("Wir erstatten dir alles.", EVIDENCE + " Wir erstatten den Betrag.") == []
