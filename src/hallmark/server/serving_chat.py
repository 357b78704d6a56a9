"""POST /v1/chat/completions: what chat fills into the shared serving skeleton (serving.py).

Messages go through the model's chat template; a stream opens with each choice's role, sends
content deltas, then a chunk with the finish reason; logprobs are OpenAI's `content` list.

With tools (engine/tools.py) the output is read as OpenAI's `tool_calls`: a whole response gets
`message.tool_calls` (and the text before the calls, if any, as `content`) with finish_reason
"tool_calls"; a stream sends each call as OpenAI does (a delta with the call's index, id, type, name
and arguments "", then argument fragments) and never sends call markup as content. A call cut short
(max_tokens) is reported as far as it got, with the engine's finish reason.
"""

from __future__ import annotations

import json
from typing import Any

from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult, StreamChunk, TokenLogprob
from hallmark.engine.sampling import MAX_STOP_STRINGS, SamplingParams
from hallmark.engine.tools import (
    CALL_OPEN,
    ToolOutput,
    parse_output,
    parse_tool_choice,
    parse_tools,
    prepare_messages,
    stream_view,
    tool_grammar,
)
from hallmark.server.engine import ModelEngine
from hallmark.server.errors import APIError
from hallmark.server.protocol import ChatCompletionRequest
from hallmark.server.serving import Endpoint


def logprob_content(engine: ModelEngine, lps: list[TokenLogprob]) -> list[dict[str, Any]]:
    tb = engine.model.tokenizer.token_bytes
    return [
        {
            "token": lp.text,
            "logprob": lp.logprob,
            "bytes": list(tb(lp.token)),
            "top_logprobs": [
                {"token": t.text, "logprob": t.logprob, "bytes": list(tb(t.token))} for t in lp.top
            ],
        }
        for lp in lps
    ]


def _messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [m.to_dict() for m in body.messages]


def _calls_tools(body: ChatCompletionRequest) -> bool:
    """Whether the output is read for tool calls: tools were given and tool_choice is not none."""
    return bool(body.tools) and body.tool_choice != "none"


def _tool_calls(body: ChatCompletionRequest, index: int, out: ToolOutput) -> list[dict[str, Any]]:
    return [
        {
            "id": body.call_id(index, k),
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for k, c in enumerate(out.calls)
    ]


def _finish(out: ToolOutput, finish_reason: str | None) -> str | None:
    # "tool_calls" only for whole calls; a call cut by max_tokens keeps "length".
    return "tool_calls" if out.complete and finish_reason == "stop" else finish_reason


def _message(
    body: ChatCompletionRequest, index: int, text: str, finish_reason: str | None
) -> tuple[dict[str, Any], str | None]:
    """A choice's message and finish reason for its output text."""
    if not _calls_tools(body):
        return {"role": "assistant", "content": text}, finish_reason
    out = parse_output(text)
    if not out.calls:
        return {"role": "assistant", "content": text}, finish_reason
    content = out.content if out.content.strip() else None
    message = {"role": "assistant", "content": content, "tool_calls": _tool_calls(body, index, out)}
    return message, _finish(out, finish_reason)


class ChatCompletions(Endpoint):
    path = "/v1/chat/completions"
    id_prefix = "chatcmpl"
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prompt_param = "messages"

    def prompt_requests(
        self, engine: ModelEngine, body: ChatCompletionRequest, params: SamplingParams
    ) -> list[Request]:
        model = engine.model
        grammar = body.output_grammar()  # compiled first: a bad schema is named as response_format
        tools = parse_tools([t.model_dump(exclude_none=True) for t in body.tools or ()])
        choice = body.tool_choice
        choice = parse_tool_choice(choice.model_dump() if hasattr(choice, "model_dump") else choice, tools)
        messages, template_tools = prepare_messages(_messages(body), tools, choice, model.chat_template)
        # The model may still write call markup after earlier calls; with tool_choice none the answer
        # ends there instead of showing it as text (no grammar: the rail stays on). Room is left for
        # the plain fallback's own stop string.
        used_tools = tools or any(m.tool_calls for m in body.messages)
        if choice.mode == "none" and used_tools and len(params.stop) < MAX_STOP_STRINGS - 1:
            params = params.with_overrides(stop=(*params.stop, CALL_OPEN))
        if choice.mode != "none":
            if body.grammar is not None:
                raise APIError(
                    400,
                    'grammar cannot be combined with tools (unless tool_choice is "none"): '
                    "the output must be able to be a tool call",
                    param="grammar",
                    code="invalid_value",
                )
            grammar = tool_grammar(tools, choice, body.parallel_tool_calls, body.answer_schema())
        return [model.chat_request(messages, params, grammar=grammar, tools=template_tools)]

    def prompt_chars(self, body: ChatCompletionRequest) -> int:
        return sum(len(m.text()) for m in body.messages)

    def log_prompt(self, body: ChatCompletionRequest) -> str:
        return json.dumps(_messages(body), ensure_ascii=False)

    def choice(
        self, engine: ModelEngine, index: int, result: GenerationResult, body: ChatCompletionRequest
    ) -> dict[str, Any]:
        message, finish_reason = _message(body, index, result.text, result.finish_reason)
        return {
            "index": index,
            "message": message,
            "logprobs": {"content": logprob_content(engine, result.logprobs or [])}
            if body.logprobs
            else None,
            "finish_reason": finish_reason,
        }

    def opening_choices(self, n: int, body: ChatCompletionRequest) -> list[dict[str, Any]]:
        # An answer that may be calls has no content yet (null, as OpenAI sends it for calls), so a
        # client that accumulates the stream gets content null, not "", for an answer of calls only.
        content = None if _calls_tools(body) else ""
        return [
            {
                "index": i,
                "delta": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(n)
        ]

    def stream_choices(
        self,
        engine: ModelEngine,
        index: int,
        piece: StreamChunk,
        text_before: str,
        body: ChatCompletionRequest,
    ) -> list[dict[str, Any]]:
        if _calls_tools(body):
            return self._tool_stream_choices(engine, index, piece, text_before, body)
        out = []
        lp = {"content": logprob_content(engine, piece.logprobs or [])} if body.logprobs else None
        if piece.text or (lp and lp["content"]):
            out.append(
                {"index": index, "delta": {"content": piece.text}, "logprobs": lp, "finish_reason": None}
            )
        if piece.final is not None:
            out.append(
                {"index": index, "delta": {}, "logprobs": None, "finish_reason": piece.final.finish_reason}
            )
        return out

    def _tool_stream_choices(
        self,
        engine: ModelEngine,
        index: int,
        piece: StreamChunk,
        text_before: str,
        body: ChatCompletionRequest,
    ) -> list[dict[str, Any]]:
        """The deltas of one piece of an output that may hold calls: what the output's view shows
        now beyond what it showed before the piece (engine/tools.stream_view)."""
        final = piece.final is not None
        before = stream_view(text_before)
        after = stream_view(text_before + piece.text, final)
        deltas: list[dict[str, Any]] = []
        if len(after.content) > len(before.content):
            deltas.append({"content": after.content[len(before.content) :]})
        for k, call in enumerate(after.calls):
            sent = before.calls[k].arguments if k < len(before.calls) else None
            if sent is None:  # a new call: its id, type and name first, as OpenAI sends them
                fn = {"name": call.name, "arguments": ""}
                head = {"index": k, "id": body.call_id(index, k), "type": "function", "function": fn}
                deltas.append({"tool_calls": [head]})
                sent = ""
            if len(call.arguments) > len(sent):
                fragment = {"arguments": call.arguments[len(sent) :]}
                deltas.append({"tool_calls": [{"index": k, "function": fragment}]})
        lp = {"content": logprob_content(engine, piece.logprobs or [])} if body.logprobs else None
        if lp and lp["content"] and not deltas:
            deltas.append({})  # the tokens' logprobs go out even while their text is held back
        out = [
            {"index": index, "delta": d, "logprobs": lp if i == 0 else None, "finish_reason": None}
            for i, d in enumerate(deltas)
        ]
        if piece.final is not None:
            out.append(
                {
                    "index": index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": _finish(after, piece.final.finish_reason),
                }
            )
        return out

    def partial_choice(
        self, index: int, text: str, result: GenerationResult | None, body: ChatCompletionRequest
    ) -> dict[str, Any]:
        message, finish_reason = _message(body, index, text, result and result.finish_reason)
        return {"index": index, "message": message, "finish_reason": finish_reason}


CHAT = ChatCompletions()
