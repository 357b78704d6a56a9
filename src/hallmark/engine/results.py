"""What generation returns: final results, stream chunks, timings and log-probabilities."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# OpenAI's finish reasons: "stop" (EOS or a stop string) or "length" (max_tokens or a full context).
FinishReason = Literal["stop", "length"]


class StopReason(enum.StrEnum):
    """Why a generation ended (finer than OpenAI's finish_reason); the values are the JSON strings."""

    EOS = "eos"
    STOP_STRING = "stop_string"
    MAX_TOKENS = "max_tokens"
    CONTEXT_FULL = "context_full"
    GRAMMAR_COMPLETE = "grammar_complete"  # the output grammar admits nothing more

    @property
    def finish_reason(self) -> FinishReason:
        return "length" if self in (StopReason.MAX_TOKENS, StopReason.CONTEXT_FULL) else "stop"


@dataclass
class TopLogprob:
    token: int
    text: str
    logprob: float


@dataclass
class TokenLogprob:
    token: int
    text: str
    logprob: float
    top: list[TopLogprob] = field(default_factory=list)  # most likely first


@dataclass
class Timings:
    """Per-response timings, named as llama.cpp's server names them."""

    prompt_n: int  # prompt tokens evaluated (not counting those reused from the KV cache)
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    cache_n: int = 0  # prompt tokens reused from a previous request's KV cache
    draft_n: int = 0  # tokens drafted by speculative decoding (engine/speculative.py)
    draft_n_accepted: int = 0  # of those, accepted

    @property
    def prompt_per_second(self) -> float:
        return self.prompt_n / self.prompt_ms * 1e3 if self.prompt_ms > 0 else 0.0

    @property
    def predicted_per_second(self) -> float:
        return self.predicted_n / self.predicted_ms * 1e3 if self.predicted_ms > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "cache_n": self.cache_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": round(self.prompt_ms, 3),
            "prompt_per_second": round(self.prompt_per_second, 2),
            "predicted_n": self.predicted_n,
            "predicted_ms": round(self.predicted_ms, 3),
            "predicted_per_second": round(self.predicted_per_second, 2),
            "draft_n": self.draft_n,
            "draft_n_accepted": self.draft_n_accepted,
        }


@dataclass
class WatermarkInfo:
    """Whether and how a response is watermarked (carried into the CLI's --json and the server)."""

    spec_id: str | None
    applied: bool
    watermarked_tokens: int = 0  # tokens chosen by the scheme (repeated contexts are not)
    reason: str | None = None  # why not applied

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    stop_reason: StopReason
    prompt_tokens: int
    timings: Timings
    model: str
    seed: int | None = None  # None for greedy decoding, which uses no randomness
    stop_string: str | None = None
    logprobs: list[TokenLogprob] | None = None
    watermark: WatermarkInfo | None = None
    human_claims_replaced: int = 0  # claims of being human the rail rewrote (hallmark.engine.rails)
    disclosure_added: bool = False  # the rail put "I'm an AI" before an answer to "are you human?"
    provenance: dict[str, Any] | None = None  # the signed manifest (hallmark.provenance), once signed
    policy: dict[str, Any] | None = None  # the request policy's decision (None when it is off)
    # With a JSON response_format: the output parsed (a dict, or the pydantic model's instance);
    # None when it did not complete (finish_reason "length"), with the reason in parse_error.
    parsed: Any = None
    parse_error: str | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "stop_reason": self.stop_reason,
            "stop_string": self.stop_string,
            "seed": self.seed,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "tokens": self.token_ids,
            "timings": self.timings.to_dict(),
            "watermark": self.watermark.to_dict() if self.watermark else None,
            "human_claims_replaced": self.human_claims_replaced,
            "disclosure_added": self.disclosure_added,
            "provenance": self.provenance,
            "policy": self.policy,
        }
        if self.logprobs is not None:
            out["logprobs"] = [asdict(lp) for lp in self.logprobs]
        if self.parsed is not None or self.parse_error is not None:
            dump = getattr(self.parsed, "model_dump", None)  # a pydantic model
            out["parsed"] = dump(mode="json") if dump is not None else self.parsed
            out["parse_error"] = self.parse_error
        return out


@dataclass
class StreamChunk:
    """One step of a stream: newly released text; the last chunk also carries `final`."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    final: GenerationResult | None = None
