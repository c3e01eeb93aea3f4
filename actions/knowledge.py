"""Free questions in the middle of the flow ("Was kostet das?"), answered from the approved sources (issue 4 point 8).

The answer comes from `leadbot.knowledge.KnowledgeAssistant` (retrieval over pricing/offers/faq/legal, with the source
named). Inside the qualification form the rules run this action and then the form, which asks its open question
again; at the consent step the action re-asks "Passt das?" itself.

A handover instead of an answer when (seed §4, §7):
  * the question asks for individual price or contract terms (`detect_contract_uncertainty`): nothing a bot may
    promise, so the assistant is not even asked;
  * the assistant escalates (low retrieval confidence, legal advice, an ungrounded generated answer): the question is
    logged as a `KnowledgeGap` for the team, and the handover service tells the lead that the team takes over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.handover import hand_over
from actions.qualification import in_conversation, latest_text
from leadbot.db.models import Conversation, KnowledgeGap
from leadbot.domain import understanding

log = logging.getLogger(__name__)

CONSENT_REASK = "Und zu meiner Frage von eben: Passt es, wenn ich dir kurz 2 Fragen stelle?"

_assistant: Any = None
_assistant_lock = threading.Lock()


def shared_assistant() -> Any:
    """The assistant loads its index and embedding model once per action server (seconds, so lazily and once)."""
    global _assistant
    with _assistant_lock:
        if _assistant is None:
            from leadbot.knowledge import KnowledgeAssistant  # heavy (torch, FAISS): only when a question comes

            _assistant = KnowledgeAssistant.from_settings()
        return _assistant


def _answer(question: str) -> Any:
    return shared_assistant().answer(question)


class ActionAnswerQuestion(Action):
    def name(self) -> str:
        return "action_answer_question"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        question = latest_text(tracker)
        if understanding.detect_contract_uncertainty(question):
            return await hand_over(dispatcher, tracker, "contract_uncertainty")
        answer = await asyncio.to_thread(_answer, question)
        if answer.escalate:

            def log_gap(session: Session, conversation: Conversation) -> None:
                session.add(
                    KnowledgeGap(
                        conversation_id=conversation.id,
                        question=question,
                        best_source=answer.best_source,
                        score=answer.score,
                    )
                )

            await in_conversation(tracker.sender_id, log_gap)
            log.info("knowledge gap (%s, score %.3f): handing over", answer.reason, answer.score)
            return await hand_over(dispatcher, tracker, f"knowledge_{answer.reason}")
        dispatcher.utter_message(text=answer.text)
        if tracker.get_slot("qualification_stage") == "consent_pending" and not tracker.active_loop.get("name"):
            dispatcher.utter_message(text=CONSENT_REASK)
        return [SlotSet("misunderstandings", 0)]
