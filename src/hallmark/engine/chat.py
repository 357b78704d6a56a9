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

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
    msgs = validate_messages(messages)
    compiled = _compile(template if template else FALLBACK_TEMPLATE)
    try:
        return compiled.render(
            messages=msgs,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except ChatFormatError:
        raise
    except jinja2.TemplateError as e:
        raise ChatFormatError(f"the model's chat template failed to render: {e}") from e
