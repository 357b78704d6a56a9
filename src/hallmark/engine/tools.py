"""Tool calling (OpenAI's `tools`): definitions into the prompt, a grammar for the calls, and the
calls out of the output.

Contract:
- `parse_tools` checks OpenAI tool objects (`{"type": "function", "function": {"name",
  "description", "parameters"}}`) and compiles each function's parameters schema; `parse_tool_choice`
  reads `tool_choice`. Bad input raises ToolError or GrammarError naming the field
  (`tools.0.function.parameters`, `tool_choice`), before any token is generated.
- `prepare_messages` makes the conversation the chat template renders. A template that renders tools
  itself in hallmark's call format (it reads the Jinja `tools` variable and writes `<tool_call>`:
  Qwen 2.5/3, Hermes, SmolLM3) gets OpenAI's tool messages and the tools as they are; any other
  template (SmolLM2's, the plain fallback for models without one) gets plain messages: the tool
  prompt below appended to the system message, assistant calls re-written as their text and tool
  results as `<tool_response>` text in a user turn. All of that is message content, which never
  becomes a control token (engine/chat.py); what a tool-aware template writes as markup is checked
  by `check_template_data` instead.
- `tool_grammar` is the output constraint for a tool choice: `required` allows only calls (one, or
  one to MAX_PARALLEL_CALLS with parallel calls), a named function exactly one call of it, each
  with arguments valid under its function's parameters schema; `auto` allows an answer or calls
  (see below); `none` has none.
- `parse_output` splits a finished output into the text before the first call and the calls;
  `stream_view` does the same for an output still being written, holding back text that may yet be
  call markup, so a stream never shows `<tool_call>` as content.

The call format (Hermes style, as Qwen's templates write it), one block per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

The grammar fixes it to the byte: the name first, compact JSON with json.dumps's separators, one
newline between calls. So the output can be read with plain string searches, and a stream knows a
call's name as soon as its `", "arguments": ` is written.

`auto`: the output is either text that never contains `<tool_call>`, or text followed by calls
(`start: TEXT | head call_body ("\\n" call){0,7}`; `head` is lazy and ends at the first
`<tool_call>`).
The model chooses freely; once it writes `<tool_call>`, the call is constrained like a required
one, so a call that is made is always valid, and a text answer can never hold a broken call. Cost
per token on gemma-3-270m's 262k vocabulary (2 shared CPU cores; llguidance's mask, then sampling
under it, replayed on a text answer and on a call): median 0.21 ms against 0.10 ms for sampling
unconstrained, mean 0.4-0.6 ms with a few 3-4 ms steps while llguidance builds its lexer states;
the same as a grammar of free text (`start: /(?s:.*)/`), so the `~` negation costs nothing
measurable. Decoding a token there takes 20-100 ms, so auto mode adds about 1%. Requests without
tools pay none of it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hallmark.backends.base import Tokenizer
from hallmark.engine.grammar import JSON_OPTIONS, Grammar, closed_objects
from hallmark.errors import GrammarError, HallmarkError

CALL_OPEN = "<tool_call>"
# The call as the grammar writes it: HEAD name NAME_END arguments TAIL, calls separated by "\n".
HEAD = '<tool_call>\n{"name": "'
NAME_END = '", "arguments": '
TAIL = "}\n</tool_call>"
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
MAX_PARALLEL_CALLS = 8  # calls in one answer when parallel_tool_calls is on

TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>"""


class ToolError(HallmarkError, ValueError):
    """Tools, a tool choice or tool messages that cannot be used; `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Tool:
    """One function the model may call; `parameters` is the JSON schema of its arguments object."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: dict(NO_PARAMETERS))

    def to_openai(self) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            fn["description"] = self.description
        fn["parameters"] = self.parameters
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolChoice:
    """`mode`: none, auto, required, or function (then `name` is the function that must be called)."""

    mode: str
    name: str | None = None


def parse_tools(tools: Sequence[Mapping[str, Any]]) -> list[Tool]:
    """Tools from OpenAI's tool objects, each parameters schema compiled (errors name the field)."""
    out: list[Tool] = []
    for i, t in enumerate(tools):
        where = f"tools.{i}"
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(t, Mapping) or t.get("type") != "function" or not isinstance(fn, Mapping):
            raise ToolError("a tool must be {'type': 'function', 'function': {'name': ...}}", where)
        name = fn.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ToolError(
                f"a function name must be 1-64 characters of a-z, A-Z, 0-9, _ and -, got {name!r}",
                f"{where}.function.name",
            )
        if any(other.name == name for other in out):
            raise ToolError(f"two tools are named {name!r}", f"{where}.function.name")
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolError("a function description must be a string", f"{where}.function.description")
        out.append(Tool(name, description, _parameters(fn.get("parameters"), f"{where}.function.parameters")))
    return out


def _parameters(schema: Any, param: str) -> dict[str, Any]:
    if schema is None:  # OpenAI: a function without parameters takes an empty object
        return dict(NO_PARAMETERS)
    if not isinstance(schema, dict):
        raise GrammarError("function parameters must be a JSON schema object", param)
    if schema.get("type", "object") != "object":
        raise GrammarError(
            f"function parameters must be the schema of a JSON object, got type {schema['type']!r}", param
        )
    schema = {"type": "object", **schema}
    Grammar.json_schema(schema, param=param)  # compiles it alone, so an error names this function
    return schema


def parse_tool_choice(choice: Any, tools: Sequence[Tool]) -> ToolChoice:
    """OpenAI's tool_choice ("none", "auto", "required" or {"type": "function", "function":
    {"name": ...}}) for these tools; unset: auto with tools, none without."""
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise ToolError("tool_choice 'required' needs tools", "tool_choice")
        return ToolChoice(choice)
    name = None
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise ToolError(
            'tool_choice must be "none", "auto", "required" or {"type": "function", "function": '
            '{"name": ...}}',
            "tool_choice",
        )
    if not any(t.name == name for t in tools):
        known = ", ".join(t.name for t in tools) or "none"
        raise ToolError(
            f"tool_choice names the function {name!r}, which is not in tools ({known})", "tool_choice"
        )
    return ToolChoice("function", name)


# -- the prompt ---------------------------------------------------------------------------------
def tool_prompt(tools: Sequence[Tool]) -> str:
    """The generic tool prompt (Qwen 2.5's wording): each function's schema as a line of JSON."""
    lines = "\n".join(json.dumps(t.to_openai(), ensure_ascii=False) for t in tools)
    return TOOL_PROMPT.replace("{tools}", lines)


@lru_cache(maxsize=16)
def template_renders_tools(template: str | None) -> bool:
    """Whether a chat template renders tools itself in hallmark's call format: it reads the `tools`
    variable and writes `<tool_call>`. A template with another format (Llama 3.1's bare JSON,
    Mistral's [TOOL_CALLS]) would teach the model calls the grammar does not allow, so such models
    get the generic prompt, whose format is the one enforced and parsed."""
    if not template or CALL_OPEN not in template:
        return False
    try:
        parsed = ImmutableSandboxedEnvironment().parse(template)
    except jinja2.TemplateSyntaxError:
        return False  # rendering reports it
    return "tools" in meta.find_undeclared_variables(parsed)


def prepare_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Tool],
    choice: ToolChoice,
    template: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages for the chat template and the template's `tools` variable (None: not passed).

    With tool_choice none the tools are left out of the prompt (as vLLM can): the model is not
    told of functions it may not call."""
    offered = list(tools) if choice.mode != "none" else []
    if template_renders_tools(template):
        return template_messages(messages), [t.to_openai() for t in offered] or None
    return plain_messages(messages, tool_prompt(offered) if offered else None), None


def call_text(name: str, arguments: Any) -> str:
    """One call as the model writes it; `arguments` a JSON string (used as its value when it parses)."""
    return f"{HEAD}{name}{NAME_END}{json.dumps(_json_value(arguments), ensure_ascii=False)}{TAIL}"


def plain_messages(messages: Sequence[Mapping[str, Any]], prompt: str | None) -> list[dict[str, Any]]:
    """OpenAI messages with tool use as plain system/user/assistant messages (the generic format):
    the tool prompt ends the system message, an assistant's calls follow its text as call blocks,
    and consecutive tool results become one user turn of `<tool_response>` blocks."""
    out: list[dict[str, Any]] = []
    results: list[str] = []

    def flush() -> None:
        if results:
            out.append({"role": "user", "content": "\n".join(results)})
            results.clear()

    for i, m in enumerate(messages):
        role, content = m.get("role"), _text(m.get("content"), i)
        if role == "tool":
            results.append(f"<tool_response>\n{content}\n</tool_response>")
            continue
        flush()
        calls = m.get("tool_calls") or []
        if calls:
            blocks = [call_text(*_call_parts(c, i, k)) for k, c in enumerate(calls)]
            content = "\n".join([content, *blocks] if content else blocks)
        out.append({"role": role, "content": content})
    flush()
    if prompt:
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages for a tool-aware template, as transformers passes them: call arguments as
    objects, and each tool result with the name of the function whose call it answers."""
    names: dict[str, str] = {}
    out = []
    for i, m in enumerate(messages):
        d = dict(m)
        if d.get("tool_calls"):
            calls = []
            for k, c in enumerate(d["tool_calls"]):
                name, arguments = _call_parts(c, i, k)
                names[str(c.get("id"))] = name
                fn = {"name": name, "arguments": _json_value(arguments)}
                calls.append({"id": c.get("id"), "type": "function", "function": fn})
            d["tool_calls"] = calls
        if d.get("role") == "tool" and "name" not in d and str(d.get("tool_call_id")) in names:
            d["name"] = names[str(d["tool_call_id"])]
        out.append(d)
    return out


def check_template_data(
    tokenizer: Tokenizer,
    tools: Sequence[Mapping[str, Any]] | None,
    messages: Sequence[Mapping[str, Any]],
) -> None:
    """Refuse tool definitions and tool calls whose text the tokenizer would read as a control token
    ('<|im_end|>'): a tool-aware template writes them as markup, so such text could close a turn
    and open another. (Message contents are kept as text by render_chat_segments.)"""
    items: list[tuple[str, Any]] = [(f"tools.{i}", t) for i, t in enumerate(tools or ())]
    for i, m in enumerate(messages):
        for key in ("tool_calls", "tool_call_id", "name"):
            if isinstance(m, Mapping) and m.get(key) is not None:
                items.append((f"messages.{i}.{key}", m[key]))
    for param, value in items:
        for text in [json.dumps(value, ensure_ascii=False), *_strings(value)]:
            ids = tokenizer.tokenize(text, add_special=False, parse_special=True)
            special = next((t for t in ids if tokenizer.is_special(t)), None)
            if special is not None:
                raise ToolError(
                    f"{param} contains {tokenizer.token_text(special)!r}, a control token of this "
                    "model's chat format, which a template would write as markup",
                    param,
                )


# -- the grammar --------------------------------------------------------------------------------
def tool_grammar(
    tools: Sequence[Tool], choice: ToolChoice, parallel: bool = True, answer: dict[str, Any] | None = None
) -> Grammar | None:
    """The output constraint for a tool choice (None for `none`). `answer`: a JSON schema the
    answer of `auto` must follow instead of free text (response_format together with tools)."""
    if choice.mode == "none" or not tools:
        return None
    callable_ = [t for t in tools if choice.mode != "function" or t.name == choice.name]
    rules = [
        f'fn_{i}: "\\"{t.name}\\", \\"arguments\\": " %json {_schema_text(t.parameters)}'
        for i, t in enumerate(callable_)
    ]
    names = " | ".join(f"fn_{i}" for i in range(len(callable_)))
    rules.append(f'call_body: "\\n{{\\"name\\": " ({names}) "}}\\n</tool_call>"')
    rules.append('call: "<tool_call>" call_body')
    # A named function is called once, as OpenAI and vLLM do (SmolLM2 forced to one function with
    # parallel calls allowed repeated the call until max_tokens); parallel calls are bounded, since a
    # small model may repeat a call until the context is full.
    many = parallel and choice.mode != "function"
    more = f' ("\\n" call){{0,{MAX_PARALLEL_CALLS - 1}}}' if many else ""
    if choice.mode != "auto":
        start = [f"start: call{more}"]
    elif answer is not None:
        start = [f"start: answer | call{more}", f"answer: %json {_schema_text(answer)}"]
    else:
        start = [
            f"start: TEXT | head call_body{more}",
            # Any text without the call marker; the marker itself starts a call (head is lazy: it
            # ends at the first one).
            "TEXT: /(?s:.*)/ & ~/(?s:.*)<tool_call>(?s:.*)/",
            "head[lazy]: /(?s:.*)<tool_call>/",
        ]
    grammar = Grammar.from_grammar("\n".join([*start, *rules]), kind="lark", param="tools")
    # auto's text answer is a conversation with a person: the human-claim rail stays on for it.
    return replace(grammar, prose=choice.mode == "auto" and answer is None)


def _schema_text(schema: dict[str, Any]) -> str:
    # Objects closed as for response_format (engine/grammar.py), JSON written as it always is.
    return json.dumps({**closed_objects(schema), "x-guidance": JSON_OPTIONS})


# -- reading the output -------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text, as far as it was written
    complete: bool  # its closing </tool_call> was written and the arguments are a JSON object


@dataclass(frozen=True)
class ToolOutput:
    content: str  # the text before the first call (all of it when there is none)
    calls: list[ParsedCall]

    @property
    def complete(self) -> bool:
        """At least one call, and every call whole."""
        return bool(self.calls) and all(c.complete for c in self.calls)


def parse_output(text: str) -> ToolOutput:
    """A finished output's text and calls."""
    return stream_view(text, final=True)


def stream_view(text: str, final: bool = False) -> ToolOutput:
    """What of an output can be shown so far: the text before any call, less a tail that may still
    grow into `<tool_call>`, and each call whose name is written, with its arguments less a tail
    that may be the call's closing `}\\n</tool_call>`. A longer text's view extends a shorter one's,
    so a stream sends the difference. `final`: the output is finished, nothing is held back."""
    at = text.find(CALL_OPEN)
    if at < 0:
        return ToolOutput(text if final else text[: len(text) - _partial_tail(text, CALL_OPEN)], [])
    calls: list[ParsedCall] = []
    pos = at
    while text.startswith(HEAD, pos):
        name_end = text.find(NAME_END, pos + len(HEAD))
        if name_end < 0:
            break
        name = text[pos + len(HEAD) : name_end]
        start = name_end + len(NAME_END)
        end = text.find(TAIL, start)
        if end < 0:
            args = text[start:]
            held = args[: len(args) - _partial_tail(args, TAIL)]
            # A finished output cut inside the closing markup (max_tokens right after the arguments'
            # "}" and the call's own "}") still has whole arguments: those, not the markup after them.
            if final and not _is_object(held):
                held = args
            calls.append(ParsedCall(name, held, False))
            break
        calls.append(ParsedCall(name, text[start:end], _is_object(text[start:end])))
        pos = end + len(TAIL)
        if not text.startswith("\n" + CALL_OPEN, pos):
            break
        pos += 1
    if final and not calls:  # markup that never became a call (cut short): it is the answer's text
        return ToolOutput(text, [])
    return ToolOutput(text[:at], calls)


def new_call_id() -> str:
    """A tool call id in OpenAI's form: call_ and 24 hex digits."""
    return f"call_{secrets.token_hex(12)}"


# -- helpers ------------------------------------------------------------------------------------
def _partial_tail(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _json_value(arguments: Any) -> Any:
    """Call arguments as a value: a JSON string's value, else the string itself."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _call_parts(call: Any, i: int, k: int) -> tuple[str, Any]:
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
        raise ToolError("a tool call needs function.name", f"messages.{i}.tool_calls.{k}")
    return fn["name"], fn.get("arguments", "{}")


def _text(content: Any, i: int) -> str:
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ToolError("content must be a string", f"messages.{i}.content")
    return content


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []
