import pytest

from leadbot.knowledge import HANDOVER_PHRASE, Answer


@pytest.mark.parametrize(
    ("question", "source", "fact"),
    [
        ("Was kostet der Pilot?", "pricing.md", "990 €"),
        ("Wie lange dauert es bis zum Go-live?", "offers.md", "14 Tage"),
        ("Wie lange braucht Meta für die Freigabe der Templates?", "faq.md", "24 bis 48 Stunden"),
        ("Wo werden meine Daten gehostet?", "legal.md", "Frankfurt"),
    ],
)
def test_answers_come_from_the_right_source_and_name_it(assistant, question, source, fact):
    answer = assistant.answer(question)
    assert answer == Answer(answer.text, source, answer.score, False, "answered", source)
    assert fact in answer.text
    assert "(Quelle: " in answer.text and answer.text.endswith(")")
    assert len(answer.text) < 450, "WhatsApp answers stay short"


def test_answer_names_the_section_title_from_the_file(assistant):
    assert assistant.answer("Was kostet das Paket Growth?").text.endswith("(Quelle: Preise – Growth)")


def test_low_confidence_hands_over_without_guessing(assistant):
    answer = assistant.answer("Habt ihr ein Büro in Wien?")
    assert answer.escalate and answer.reason == "low_confidence" and answer.source is None
    assert HANDOVER_PHRASE in answer.text and "Assistent" in answer.text
    assert answer.best_source is not None and 0 < answer.score < 1


def test_legal_advice_is_handed_over(assistant):
    answer = assistant.answer("Muss ich wegen einer Abmahnung zum Anwalt?")
    assert (answer.escalate, answer.reason, answer.source) == (True, "out_of_scope", None)
    assert HANDOVER_PHRASE in answer.text and "Rechtsberatung" in answer.text


@pytest.mark.parametrize("question", ["Wie wird das Wetter morgen?", "Erzähl mir einen Witz", "   "])
def test_off_topic_is_declined_politely(assistant, question):
    answer = assistant.answer(question)
    assert (answer.escalate, answer.reason, answer.source) == (False, "out_of_scope", None)
    assert "digitale Assistent" in answer.text and "dir" in answer.text


def test_no_per_question_index_loading(assistant, monkeypatch):
    from leadbot.knowledge import index as index_module

    def fail(*args, **kwargs):
        raise AssertionError("index loaded per question")

    monkeypatch.setattr(index_module.KnowledgeIndex, "load_or_build", fail)
    monkeypatch.setattr(index_module.faiss, "read_index", fail)
    assert assistant.answer("Kann ich monatlich kündigen?").reason in {"answered", "low_confidence"}


@pytest.mark.parametrize("question", ["Bis wann ist der Bot eingerichtet?", "Haftet ihr bei Ausfällen von Twilio?"])
def test_guards_do_not_catch_ordinary_questions(assistant, question):
    assert assistant.answer(question).reason == "answered"
