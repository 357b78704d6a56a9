"""Request bodies of the OpenAI-compatible endpoints, as pydantic models.

Unknown fields are refused (400 naming the field) rather than ignored, so a client never believes
a feature took effect when it did not; a field sent as null is treated as not sent. Types are
strict, as OpenAI's API is: "0.5" is not a temperature and true is not an n. Every string must be
valid Unicode (JSON can carry a lone surrogate, "\\ud800", which no tokenizer or log can store),
inside JSON schemas too.

Structured output and tools are here as OpenAI sends them (`response_format`, `tools`,
`tool_choice`, `parallel_tool_calls`, assistant `tool_calls` and `tool` messages) plus llama-server's
`grammar` string; what their values mean (a schema that compiles, a tool_choice naming a function
in `tools`) is checked where they are compiled, engine/grammar.py and engine/tools.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hallmark.engine.grammar import Grammar
from hallmark.engine.sampling import MAX_STOP_LENGTH, MAX_STOP_STRINGS, SamplingParams
from hallmark.engine.tools import new_call_id
from hallmark.watermark.spec import DEFAULT_FPR
from hallmark.zeroshot import DEFAULT_ZS_FPR

# ASCII digits only (str.isdigit() also accepts "²"), and few: int() refuses over 4300 digits.
_TOKEN_ID = re.compile(r"-?[0-9]{1,10}")
# OpenAI's rule for function and response-format names.
_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _unicode_in(value: Any, where: str = "") -> Any:
    """`value` (a JSON value) if every string in it, keys included, is valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            at = f" in {where}" if where else ""
            raise ValueError(f"not valid Unicode: a lone surrogate at character {e.start}{at}") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _unicode_in(k, where)
            _unicode_in(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _unicode_in(v, f"{where}.{i}" if where else str(i))
    return value


class OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        # Strings and lists of strings here; nested objects check their own fields (naming the path).
        for text in [value] if isinstance(value, str) else value if isinstance(value, list) else ():
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise ValueError(f"not valid Unicode: a lone surrogate at character {e.start}") from None
        return value


class StreamOptions(OpenAIRequest):
    include_usage: bool = False


class JSONSchemaFormat(OpenAIRequest):
    # `schema` would shadow a BaseModel attribute: the field is schema_, named "schema" on the wire.
    schema_: dict[str, Any] = Field(alias="schema")
    name: str | None = Field(None, pattern=_NAME)
    description: str | None = None
    strict: bool | None = None  # hallmark's grammar is always exact, strict or not

    @field_validator("schema_")
    @classmethod
    def _schema_unicode(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _unicode_in(v)


class ResponseFormat(OpenAIRequest):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('json_schema is required with, and only allowed with, type "json_schema"')
        return self


class SamplingFields(OpenAIRequest):
    """Fields shared by chat and text completions, including hallmark's extra sampling fields."""

    model: str
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # hallmark / llama.cpp extensions
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    # llama-server and vLLM accept it, and benchmark clients send it to get fixed-length outputs.
    ignore_eos: bool | None = None
    # Structured output: OpenAI's response_format, or llama-server's grammar (GBNF or Lark).
    response_format: ResponseFormat | None = None
    grammar: str | None = None

    @field_validator("grammar")
    @classmethod
    def _one_constraint(cls, v: str | None, info: ValidationInfo) -> str | None:
        # `response_format` is declared before `grammar`, so it is validated (and in info.data) first.
        rf = info.data.get("response_format")
        if v is not None and rf is not None and rf.type != "text":
            raise ValueError("grammar and response_format cannot be combined: send one of them")
        return v

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if any(s == "" for s in items):
            raise ValueError("stop strings must not be empty")
        if len(items) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(items)}")
        if any(len(s) > MAX_STOP_LENGTH for s in items):
            raise ValueError(f"a stop string may be at most {MAX_STOP_LENGTH} characters long")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (v or {}).items():
            if not _TOKEN_ID.fullmatch(token):
                raise ValueError(f"logit_bias keys must be token ids, got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {bias}")
        return v

    @field_validator("stream_options")
    @classmethod
    def _stream_options_need_stream(
        cls, v: StreamOptions | None, info: ValidationInfo
    ) -> StreamOptions | None:
        # `stream` is declared before `stream_options`, so it is validated (and in info.data) first.
        if v is not None and not info.data.get("stream", False):
            raise ValueError("stream_options is only allowed when stream is true")
        return v

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def answer_schema(self) -> dict[str, Any] | None:
        """The JSON schema response_format asks the answer to follow (None: free text)."""
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        return rf.json_schema.schema_ if rf.json_schema is not None else {"type": "object"}

    def output_grammar(self) -> Grammar | None:
        """The grammar response_format or grammar asks for, compiled (GrammarError naming the field)."""
        if self.grammar is not None:
            return Grammar.from_grammar(self.grammar, param="grammar")
        rf = self.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_object":
            return Grammar.json_object()
        assert rf.json_schema is not None
        return Grammar.json_schema(rf.json_schema.schema_, param="response_format")

    def token_limit(self) -> int | None:
        """The completion tokens asked for; None: until the model stops or the context is full."""
        return self.max_tokens

    def logprobs_count(self) -> int | None:
        """How many alternatives each token's log-probability comes with; None: no logprobs."""
        return None

    def to_sampling_params(self) -> SamplingParams:
        """hallmark's SamplingParams for this request; fields not sent keep hallmark's defaults.

        Raises InvalidSamplingError for a value the engine refuses (a 400 through the error table).
        """
        sent = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": self.seed,
            "ignore_eos": self.ignore_eos,
            "logprobs": self.logprobs_count(),
        }
        fields: dict[str, Any] = {k: v for k, v in sent.items() if v is not None}
        if self.logit_bias:
            fields["logit_bias"] = {int(k): v for k, v in self.logit_bias.items()}
        # OpenAI semantics: without max_tokens, generate until the model stops or the context is full.
        fields["max_tokens"] = self.token_limit()
        fields["stop"] = self.stop_list()
        return SamplingParams(**fields)


class TextPart(OpenAIRequest):
    type: Literal["text"]
    text: str


class FunctionCall(OpenAIRequest):
    name: str = Field(pattern=_NAME)
    arguments: str  # JSON text, as OpenAI writes it


class ToolCall(OpenAIRequest):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(OpenAIRequest):
    # No `name`: chat templates have no place for a participant name, so sending one is a 400
    # naming `messages.<i>.name` rather than a name the model never sees.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = Field(None, min_length=1)  # an assistant's calls
    tool_call_id: str | None = None  # the call a tool message answers

    @field_validator("tool_calls")
    @classmethod
    def _calls_by_assistant(cls, v: list[ToolCall] | None, info: ValidationInfo) -> list[ToolCall] | None:
        if v is not None and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        return v

    @field_validator("tool_call_id")
    @classmethod
    def _id_on_tool_message(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("role") != "tool":
            raise ValueError("only tool messages have a tool_call_id")
        return v

    @model_validator(mode="after")
    def _tool_message_answers_a_call(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""

    def to_dict(self) -> dict[str, Any]:
        """The message as the engine takes it: OpenAI's "developer" role is the system prompt of
        newer models (templates know "system"); content as one string."""
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionDefinition(OpenAIRequest):
    name: str = Field(pattern=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object
    strict: bool | None = None  # arguments always follow the schema exactly, strict or not

    @field_validator("parameters")
    @classmethod
    def _parameters_unicode(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _unicode_in(v)


class ToolDefinition(OpenAIRequest):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(OpenAIRequest):
    name: str


class NamedToolChoice(OpenAIRequest):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and not info.data.get("logprobs", False):
            raise ValueError("top_logprobs requires logprobs to be true")
        return v

    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    # Tool call ids of this request's response by (choice, call): a stream sends each once, and the
    # request log must show the same ones.
    _call_ids: dict[tuple[int, int], str] = PrivateAttr(default_factory=dict)

    @field_validator("tool_choice")
    @classmethod
    def _choice_names_a_tool(
        cls, v: str | NamedToolChoice | None, info: ValidationInfo
    ) -> str | NamedToolChoice | None:
        # `tools` is declared before `tool_choice`, so it is validated (and in info.data) first.
        names = [t.function.name for t in info.data.get("tools") or ()]
        if isinstance(v, NamedToolChoice) and v.function.name not in names:
            known = ", ".join(names) or "no tools were given"
            raise ValueError(f"it names the function {v.function.name!r}, which is not in tools ({known})")
        if v == "required" and not names:
            raise ValueError('"required" needs tools')
        return v

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def call_id(self, choice: int, call: int) -> str:
        """The id of a choice's call, made once (call_ and 24 hex digits, as OpenAI's)."""
        return self._call_ids.setdefault((choice, call), new_call_id())


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)

    def logprobs_count(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts (text or token ids)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [p]  # type: ignore[list-item]
        return list(p)  # type: ignore[arg-type]


class DetectRequest(OpenAIRequest):
    text: str
    model: str | None = None  # whose tokenizer to use; default: the model the spec names, or the first served
    spec: str | None = None  # a spec id or JSON; default: the served model's own spec
    fpr: float = Field(DEFAULT_FPR, gt=0, lt=1)
    windowed: bool = True
    # Texts whose (context, token) pairs are left out of the score: a blank template, say, so that
    # its boilerplate cannot flag a document written from it (docs/watermark.md).
    reference: list[str] = Field(default_factory=list, max_length=64)
    # The zero-shot assessment (hallmark.zeroshot) beside the watermark's verdict: None = when the
    # server offers it (`--zero-shot`, the default); true asks for it (400 if the server has it off).
    zero_shot: bool | None = None
    zs_fpr: float = Field(DEFAULT_ZS_FPR, gt=0, lt=1)
    # Each scored token's standardized watermark score ([start, end, z]), for a plot along the text.
    token_scores: bool = False


class VerifyRequest(OpenAIRequest):
    """POST /v1/provenance/verify: a text and the manifest (or a response carrying one) to check."""

    text: str
    manifest: Any


def field_path(loc: tuple[int | str, ...]) -> str | None:
    """The request field a pydantic error location names, as OpenAI's `param` ("messages.0.content").

    Locations also hold the union branch that failed ("str", "list[str]", "function-after[...]"),
    which is not a field: only list indices and the protocol's field names are kept.
    """
    names = _field_names()
    parts = [str(x) for x in loc if isinstance(x, int) or (x != "body" and x in names)]
    return ".".join(parts) or None


def _field_names() -> frozenset[str]:
    classes, seen = [OpenAIRequest], set()
    while classes:
        cls = classes.pop()
        seen |= {f.alias or name for name, f in cls.model_fields.items()}  # errors name the wire name
        classes += cls.__subclasses__()
    return frozenset(seen)
