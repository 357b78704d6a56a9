"""Chat messages -> prompt text, with the Jinja chat template stored in the GGUF file.

Rendering follows the conventions transformers and llama.cpp use for these templates (trim_blocks,
lstrip_blocks, a sandboxed environment, `raise_exception`, `bos_token`/`eos_token`,
`add_generation_prompt`). A model without a template (a base model such as gemma-3-270m) gets the
plain fallback below, which a base model continues naturally:

    <system prompt>

    User: <message>
    Assistant: <reply>
    User: <message>
    Assistant:
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hallmark.backends.base import Tokenizer
from hallmark.errors import ChatFormatError

ROLES = ("system", "user", "assistant")

FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{{ m.content }}\n\n"
    "{% elif m.role == 'user' %}User: {{ m.content }}\n"
    "{% else %}Assistant: {{ m.content }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
# The fallback's turn marker: generation should stop before the model writes the next user turn.
FALLBACK_STOP = ("\nUser:",)


def _raise(message: str) -> None:
    raise ChatFormatError(f"chat template: {message}")


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatFormatError(f"the model's chat template does not parse: {e}") from e


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise ChatFormatError("messages must be a list of {'role': ..., 'content': ...} objects")
    if not messages:
        raise ChatFormatError("messages is empty: give at least one user message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatFormatError(f"message {i} is not an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ChatFormatError(f"message {i}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ChatFormatError(f"message {i}: content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render messages to the prompt text the model was trained on (or the plain fallback)."""
    return "".join(
        text
        for text, _ in render_chat_segments(messages, template, bos_token, eos_token, add_generation_prompt)
    )


# What a template may do to a message's content on its way into the prompt. Templates commonly
# `trim` it (Gemma's do); anything else is refused rather than guessed (see render_chat_segments).
_CONTENT_TRANSFORMS: tuple[Callable[[str], str], ...] = (lambda c: c, str.strip, str.lstrip, str.rstrip)


def render_chat_segments(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> list[tuple[str, bool]]:
    """The rendered prompt as (text, is_content) segments: the template's markup, and the messages'
    contents exactly as the template placed them.

    The tokenizer may read control tokens ('<|im_end|>') in markup only: a message that contains
    such text must stay text, or a user could close their turn and write a system turn. So the
    template is rendered twice, with the contents and with unique placeholders for them; the
    placeholders mark where each content went. A template that changes a content beyond trimming
    whitespace cannot be separated from its markup and is refused (ChatFormatError).
    """
    msgs = validate_messages(messages)
    compiled = _compile(template if template else FALLBACK_TEMPLATE)
    nonce = secrets.token_hex(8)
    marker = re.compile(f"\ue000{nonce}:(\\d+)\ue001")
    masked_msgs = [{**m, "content": f"\ue000{nonce}:{i}\ue001"} for i, m in enumerate(msgs)]
    real, masked = (
        _render(compiled, ms, bos_token, eos_token, add_generation_prompt) for ms in (msgs, masked_msgs)
    )
    parts = marker.split(masked)  # markup, index, markup, index, ..., markup
    markup, refs = parts[0::2], [int(i) for i in parts[1::2]]
    for transform in _CONTENT_TRANSFORMS:
        contents = [transform(msgs[i]["content"]) for i in refs]
        if "".join(m + c for m, c in zip(markup, [*contents, ""], strict=True)) == real:
            segments = [(m, False) for m in markup]
            for k, content in enumerate(contents):
                segments.insert(2 * k + 1, (content, True))
            return [(text, is_content) for text, is_content in segments if text]
    raise ChatFormatError(
        "the model's chat template changes message contents in a way hallmark cannot separate from "
        "its markup, so it cannot keep control-token text in messages from acting as markup"
    )


def _render(
    compiled: jinja2.Template,
    messages: list[dict[str, str]],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
) -> str:
    try:
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except ChatFormatError:
        raise
    except jinja2.TemplateError as e:
        raise ChatFormatError(f"the model's chat template failed to render: {e}") from e


def tokenize_chat(tokenizer: Tokenizer, segments: list[tuple[str, bool]], add_bos: bool) -> list[int]:
    """Token ids of a rendered chat: control tokens come from the template's markup only.

    The markup's own control tokens are found by tokenizing it with parse_special; everything
    between two of them (markup text and message contents alike) is tokenized in one piece as
    plain text, which is how the tokenizer splits a whole prompt at its control tokens anyway, so
    tokens still merge across a markup/content boundary ('User: ' + 'hi' gives ' hi').
    """
    pieces: list[str | int] = []  # plain text and control token ids, in order
    text = ""
    for segment, is_content in segments:
        if is_content:
            text += segment
            continue
        cursor = 0
        for token in tokenizer.tokenize(segment, add_special=False, parse_special=True):
            if not tokenizer.is_special(token):
                continue
            marker = tokenizer.token_text(token)
            at = segment.find(marker, cursor)
            if not marker or at < 0:  # not from this text (cannot happen for a real vocabulary)
                continue
            pieces += [text + segment[cursor:at], token]
            text, cursor = "", at + len(marker)
        text += segment[cursor:]
    pieces.append(text)
    ids = tokenizer.tokenize("", add_special=True, parse_special=False) if add_bos else []
    for piece in pieces:
        if isinstance(piece, int):
            ids.append(piece)
        elif piece:
            ids += tokenizer.tokenize(piece, add_special=False, parse_special=False)
    return ids
