"""Chat messages -> prompt text, with the Jinja chat template stored in the GGUF file.

Rendering follows the conventions transformers and llama.cpp use for these templates (trim_blocks,
lstrip_blocks, a sandboxed environment, `raise_exception`, `bos_token`/`eos_token`,
`add_generation_prompt`, the `tools` variable, and transformers' `tojson`). A model without a
template (a base model such as gemma-3-270m) gets the plain fallback below, which a base model
continues naturally:

    <system prompt>

    User: <message>
    Assistant: <reply>
    User: <message>
    Assistant:

Messages may also be tool messages (role `tool`, with `tool_call_id`) and assistant messages with
`tool_calls` (OpenAI's form, arguments as given), for templates that render tool use; hallmark's
generic tool prompt for other templates turns them into plain messages first (engine/tools.py).
"""

from __future__ import annotations

import json
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

ROLES = ("system", "user", "assistant", "tool")
# Keys of a message besides role and content that reach the template (tool use, OpenAI's names).
TOOL_KEYS = ("tool_calls", "tool_call_id", "name")

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


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' filter, which the templates were written for: Jinja's own sorts keys and escapes
    # <, >, & and ' for HTML, so tool schemas would not read as the model saw them in training.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatFormatError(f"the model's chat template does not parse: {e}") from e


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template gets them: role, content (a string; "" for an assistant message
    that only calls tools) and the tool keys a message has."""
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
        calls = m.get("tool_calls")
        if calls is not None and (role != "assistant" or not isinstance(calls, list)):
            raise ChatFormatError(f"message {i}: tool_calls must be a list, on an assistant message")
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise ChatFormatError(f"message {i}: content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content, **{k: m[k] for k in TOOL_KEYS if m.get(k) is not None}})
    return out


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Render messages to the prompt text the model was trained on (or the plain fallback)."""
    return "".join(
        text
        for text, _ in render_chat_segments(
            messages, template, bos_token, eos_token, add_generation_prompt, tools
        )
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
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[tuple[str, bool]]:
    """The rendered prompt as (text, is_content) segments: the template's markup, and the messages'
    contents exactly as the template placed them. `tools` (OpenAI's tool objects) is the template's
    `tools` variable.

    The tokenizer may read control tokens ('<|im_end|>') in markup only: a message that contains
    such text must stay text, or a user could close their turn and write a system turn. So the
    template is rendered twice, with the contents and with unique placeholders for them; the
    placeholders mark where each content went. A template that changes a content beyond trimming
    whitespace cannot be separated from its markup and is refused (ChatFormatError). An empty content
    gets no placeholder: templates test contents for truth (an assistant turn that only calls tools).

    Tool definitions and tool calls are markup here (templates write them as JSON of their own): the
    caller keeps control-token text out of them (hallmark.engine.tools.check_template_data).
    """
    msgs = validate_messages(messages)
    compiled = _compile(template if template else FALLBACK_TEMPLATE)
    nonce = secrets.token_hex(8)
    marker = re.compile(f"\ue000{nonce}:(\\d+)\ue001")
    masked_msgs = [
        {**m, "content": f"\ue000{nonce}:{i}\ue001"} if m["content"] else m for i, m in enumerate(msgs)
    ]
    tool_list = [dict(t) for t in tools] if tools is not None else None
    real, masked = (
        _render(compiled, ms, bos_token, eos_token, add_generation_prompt, tool_list)
        for ms in (msgs, masked_msgs)
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
    messages: list[dict[str, Any]],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    # `tools` only when there are some: a template tells a conversation without tools by it being
    # undefined or none, and every rendering without tools stays exactly as it was.
    extra = {"tools": tools} if tools is not None else {}
    try:
        return compiled.render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
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
