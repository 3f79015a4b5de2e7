"""Conversations and chat templates."""

from __future__ import annotations

from typing import Any, Sequence

from .errors import ContextLengthError, PairMismatchError, PromptError

ROLES = ("system", "user", "assistant")

# ChatML, as the Qwen models use: the tiny test tokenizers carry its markers as tokens.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# For models without a chat template (base models): plain text turns, as in the pretraining data, so no
# marker outside the model's vocabulary reaches it. Its own begin-of-text token leads, when it has one.
PLAIN_FORMAT_NAME = "plain Question:/Answer: turns"
PLAIN_PROMPT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Answer: ' + message['content'] + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer:' }}{% endif %}"
)
# A base model answers, then writes the next turn itself: its answer ends where a new turn begins.
PLAIN_STOP_STRINGS = ("\nQuestion:", "\nAnswer:")


def find_stop(text: str, stop_strings: Sequence[str]) -> tuple[int | None, int]:
    """(where the first stop string begins, or None; how much of the end may still begin one)."""
    found = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    if found:
        return min(found), 0
    held = 0
    for stop in stop_strings:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return None, held


def user(text: str) -> list[dict[str, str]]:
    """A one-message conversation: the CLI's ``--prompt``."""
    return [{"role": "user", "content": text}]


def check_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Validate a conversation: roles known, contents strings, ending in a non-empty user turn."""
    if not messages:
        raise PromptError("The conversation is empty; type a question first.")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise PromptError(f"Message {i + 1} needs a 'role' and a 'content'.")
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise PromptError(f"Message {i + 1} has role {role!r}; use one of {', '.join(ROLES)}.")
        if not isinstance(content, str):
            raise PromptError(f"Message {i + 1}'s content must be text.")
        problem = unicode_problem(content)
        if problem:
            raise PromptError(f"Message {i + 1} {problem}")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise PromptError("The conversation must end with a user message to answer.")
    if not out[-1]["content"].strip():
        raise PromptError("The prompt is empty; type a question first.")
    return out


def unicode_problem(text: str) -> str | None:
    """What keeps ``text`` from being encoded (an unpaired surrogate, which no tokenizer takes), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds an unpaired surrogate (\\u{ord(text[exc.start]):04x} at character {exc.start + 1}), "
                "which is not valid Unicode text; remove it or paste the text again.")
    return None


def render(tokenizer: Any, messages: Sequence[dict[str, str]], thinking: bool = False,
           add_generation_prompt: bool = True) -> str:
    """The conversation as the model sees it, generation prompt included unless asked otherwise.

    No system message is added unless the conversation has one (a template may
    still add its own default, as Qwen2.5's does). ``enable_thinking`` is passed
    for templates that read it (Qwen3) and ignored by the others.
    """
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=thinking
    )


def encode(tokenizer: Any, messages: Sequence[dict[str, str]], thinking: bool = False) -> list[int]:
    """Token ids of the rendered conversation (special tokens come from the template only)."""
    return list(tokenizer(render(tokenizer, messages, thinking), add_special_tokens=False)["input_ids"])


def check_fits(model: Any, n_tokens: int) -> None:
    """A prompt of ``n_tokens`` fits ``model``'s (a LoadedModel's) context, with room for one new token."""
    if n_tokens >= model.context_length:
        raise ContextLengthError(
            f"The prompt is {n_tokens} tokens, but the {model.role}'s context holds {model.context_length}; "
            "shorten the prompt or clear the conversation."
        )


def check_in_vocabulary(sharer: Any, ids: Sequence[int], name: str = "") -> None:
    """The ids a sharer prefills (the receiver's, where a fuser does not align tokens) are all in its vocabulary;
    ``name``: a team's sharer, named in the error."""
    vocab = sharer.model.get_input_embeddings().num_embeddings
    if ids and max(ids) >= vocab:
        whose = f"sharer {name}'s" if name else "the sharer's"
        raise PairMismatchError(
            f"The receiver's token ids reach {max(ids)}, past {whose} vocabulary of {vocab}: these tokenizers "
            "differ, but the fuser does not align tokens. Use a fuser made with token alignment."
        )
