"""Deterministic handover/opt-out signals as the last step of the Rasa NLU pipeline (Rasa process only).

DIET learns intents from examples, but three decisions must not depend on a statistical model (issue 4 point 9,
seed §4): an opt-out word, an explicit request for a human (Mitarbeiter, Berater, Anrufen, Rückruf, ...) and a
message whose negative sentiment crosses `HANDOVER_SENTIMENT_THRESHOLD`. This component applies the pure rules from
`leadbot.domain.understanding` after DIET and the FallbackClassifier and overrides the intent when one fires, so
rules and stories (and `rasa test --e2e`) see one consistent intent, in and outside the qualification form.

The threshold is authoritative both ways: a `complain` predicted by DIET for a message that the sentiment rules
do not rate as negative enough is replaced by the next-best intent. The env var is read per message, so changing
it needs a restart but no retraining. Default 0.65: a single mildly negative word ("gerade schlecht", "Ads haben
schlecht funktioniert") scores about -0.58 and is no reason for a handover; insults and anger score -0.66 and lower.

Yes/no: when DIET says affirm, deny, inform_volume or fallback, `parse_yes_no` (unit-tested on 150+ phrasings)
decides between affirm and deny, so "👍", "jaaa" or "nö, danke" answer the consent question reliably.

Gibberish: DIET's character n-grams make it confident even for "blubb" or "qwertz". A message none of whose words
occur in the training data or its lookup tables (digits and emoji aside, and unless the yes/no, ads or lead-volume
parsers understand it) is therefore `nlu_fallback`, which feeds the "more than two misunderstandings in a row"
handover. The component learns that vocabulary at training time.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from leadbot.domain import understanding
from leadbot.domain.text import fold

THRESHOLD_ENV = "HANDOVER_SENTIMENT_THRESHOLD"
OPT_OUT_INTENT = "opt_out"
HUMAN_INTENT = "request_human"
COMPLAIN_INTENT = "complain"
DEFAULT_SENTIMENT_THRESHOLD = 0.65
# DIET confuses short yes/no idioms with these ("kein Problem" looks like a volume); questions are never overridden.
_YES_NO_INTENTS = frozenset({"affirm", "deny", "inform_volume", DEFAULT_NLU_FALLBACK_INTENT_NAME})
_WORD = re.compile(r"[a-z]+")
_VOCABULARY_FILE = "vocabulary.json"


def sentiment_threshold() -> float:
    """The configured negative-sentiment threshold (absolute value on the [-1, 1] score)."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    return float(raw) if raw else DEFAULT_SENTIMENT_THRESHOLD


def signal_intent(text: str, threshold: float) -> str | None:
    """The intent forced by a deterministic rule, in priority order, or None."""
    if not text:
        return None
    if understanding.is_opt_out(text):
        return OPT_OUT_INTENT
    if understanding.detect_handover_request(text):
        return HUMAN_INTENT
    if understanding.is_negative(text, threshold):
        return COMPLAIN_INTENT
    return None


def _answers_a_question(text: str) -> bool:
    """Unseen words that the Q1/Q2 parsers understand ("hundertfünfzig", "Pinterest Ads") are no gibberish."""
    return understanding.parse_lead_volume(text) is not None or understanding.parse_ads_running(text) is not None


def words(text: str) -> set[str]:
    """Letter-only words of a message, umlauts folded; digits and emoji are not words here."""
    return set(_WORD.findall(fold(text)))


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class HandoverSignals(GraphComponent, IntentClassifier):
    """Overrides the predicted intent when an opt-out, handover keyword or strong negative sentiment is found."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {}

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        vocabulary: set[str] | None = None,
    ) -> None:
        self.component_config = config
        self._model_storage = model_storage
        self._resource = resource
        self._vocabulary = vocabulary or set()

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> HandoverSignals:
        return cls(config, model_storage, resource)

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> HandoverSignals:
        try:
            with model_storage.read_from(resource) as directory:
                vocabulary = set(json.loads((directory / _VOCABULARY_FILE).read_text(encoding="utf-8")))
        except (ValueError, FileNotFoundError):
            vocabulary = set()
        return cls(config, model_storage, resource, vocabulary)

    def train(self, training_data: TrainingData) -> Resource:
        vocabulary: set[str] = set()
        for example in training_data.intent_examples:
            vocabulary |= words(example.get(TEXT) or "")
        # A word from a lookup table (greetings, farewells, ...) is known even where no training sentence uses it.
        for table in training_data.lookup_tables:
            for element in table.get("elements") or []:
                vocabulary |= words(str(element))
        self._vocabulary = vocabulary
        with self._model_storage.write_to(self._resource) as directory:
            (directory / _VOCABULARY_FILE).write_text(json.dumps(sorted(vocabulary)), encoding="utf-8")
        return self._resource

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        threshold = sentiment_threshold()
        for message in messages:
            self._process_one(message, threshold)
        return messages

    @staticmethod
    def _set_intent(message: Message, intent: str, ranking: list[dict[str, Any]]) -> None:
        if (message.get(INTENT) or {}).get(INTENT_NAME_KEY) == intent:
            return
        message.set(INTENT, {INTENT_NAME_KEY: intent, PREDICTED_CONFIDENCE_KEY: 1.0}, add_to_output=True)
        ranking = [{INTENT_NAME_KEY: intent, PREDICTED_CONFIDENCE_KEY: 1.0}] + [
            entry for entry in ranking if entry.get(INTENT_NAME_KEY) != intent
        ]
        message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)

    def _process_one(self, message: Message, threshold: float) -> None:
        text = message.get(TEXT) or ""
        if text.startswith("/"):  # "/intent" payloads (buttons, tests) are explicit
            return
        predicted = (message.get(INTENT) or {}).get(INTENT_NAME_KEY)
        forced = signal_intent(text, threshold)
        ranking = list(message.get(INTENT_RANKING_KEY) or [])
        if forced == COMPLAIN_INTENT and predicted == OPT_OUT_INTENT:
            forced = None  # "hört auf mir zu schreiben!" is angry, but the wish to stop comes first
        if forced is not None:
            self._set_intent(message, forced, ranking)
            return
        yes_no = understanding.parse_yes_no(text)
        volume_answer = predicted == "inform_volume" and understanding.parse_lead_volume(text) is not None
        if predicted in _YES_NO_INTENTS and yes_no is not None and not volume_answer:
            # A plain yes/no decides the consent step; the tested parser beats DIET on "👍", "jaaaa" or "nö, danke".
            self._set_intent(message, "affirm" if yes_no == "yes" else "deny", ranking)
            return
        message_words = words(text)
        unknown_words = bool(message_words) and not message_words & self._vocabulary
        if self._vocabulary and unknown_words and yes_no is None and not _answers_a_question(text):
            message.set(
                INTENT, {INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME, PREDICTED_CONFIDENCE_KEY: 1.0},
                add_to_output=True,
            )
            return
        if predicted == COMPLAIN_INTENT:
            # The configured threshold decides about sentiment, not DIET. (A DIET-only `request_human` or `opt_out`
            # stands: erring towards a human or towards silence is the safe side.)
            rest = [entry for entry in ranking if entry.get(INTENT_NAME_KEY) != COMPLAIN_INTENT]
            if rest:
                message.set(INTENT, dict(rest[0]), add_to_output=True)
                message.set(INTENT_RANKING_KEY, rest, add_to_output=True)
