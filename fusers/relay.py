"""Text relay's conversations (the paper's "T2T" baseline): the question the sharer answers with its hint, and the
one the receiver answers after reading it. Shared by the engine (fusers.engine) and a team's runs
(fusers.team_run)."""

from __future__ import annotations

# The reference's text-relay prompts (the paper's "T2T" baseline).
RELAY_CONTEXT_PROMPT = (
    "In one clear sentence, describe the most essential background knowledge needed to answer the question:"
    "\n\n{question}\n\nDo NOT directly solve or give answer to the question."
)
RELAY_ANSWER_PROMPT = "Based on the background, accurately answer the question:\n\n{question}"


def relay_turns(messages: list[dict[str, str]], hint: str = "") -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Text relay's two conversations: the one the sharer writes its hint after (the context question), and the
    one the receiver answers (the context question, the hint as the answer to it, and the question again)."""
    history, question = messages[:-1], messages[-1]["content"]
    context_turn = {"role": "user", "content": RELAY_CONTEXT_PROMPT.format(question=question)}
    return history + [context_turn], history + [
        context_turn,
        {"role": "assistant", "content": hint},
        {"role": "user", "content": RELAY_ANSWER_PROMPT.format(question=question)},
    ]
