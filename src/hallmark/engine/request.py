"""A generation request, from submission to its result: the one object the engine tracks per request.

The caller builds a Request (prompt ids, sampling parameters, watermark scheme, adapters) and
hands it to the scheduler, which admits it to a KV-cache slot, prefills its prompt (possibly in
chunks), then feeds each step's logits to `accept`, which samples, detokenizes and decides when
it ends. `status` says where it is; only the scheduler's thread changes it, and `cancel` from any
other thread only raises a flag the scheduler acts on at its next step.
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hallmark.backends.base import AdapterSet
from hallmark.engine.detokenize import TextStream
from hallmark.engine.grammar import Grammar, GrammarState
from hallmark.engine.rails import HumanClaimRail
from hallmark.engine.results import (
    GenerationResult,
    StopReason,
    StreamChunk,
    Timings,
    TokenLogprob,
    TopLogprob,
    WatermarkInfo,
)
from hallmark.engine.sampler import Sampler, token_logprob
from hallmark.engine.sampling import SamplingParams
from hallmark.engine.speculative import DraftState
from hallmark.errors import ContextLengthError, InvalidSamplingError, PromptError
from hallmark.watermark.schemes import Scheme, SequenceWatermarker


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # submitted, no KV-cache slot yet
    PREFILLING = "prefilling"  # its prompt is being evaluated (in chunks when long)
    DECODING = "decoding"  # one new token per step
    FINISHED = "finished"  # ended by EOS, a stop string, max_tokens or a full context
    CANCELLED = "cancelled"  # the caller cancelled it, or the engine stopped
    FAILED = "failed"  # a backend call it was part of failed

    @property
    def done(self) -> bool:
        return self in (RequestStatus.FINISHED, RequestStatus.CANCELLED, RequestStatus.FAILED)


def new_seed() -> int:
    return secrets.randbits(63)


def fits_context(prompt_tokens: int, n_ctx: int, max_tokens: int | None = None) -> bool:
    """Whether a prompt leaves room in the context window: at least one token, or all of
    `max_tokens` when the caller needs them (the server's OpenAI semantics, the task functions).
    This is the one place the rule is written; nothing is ever truncated to fit."""
    return prompt_tokens + (max_tokens if max_tokens is not None else 1) <= n_ctx


def check_fits(prompt_tokens: int, n_ctx: int, max_tokens: int | None = None) -> None:
    """Raise ContextLengthError (with both counts) unless `fits_context`."""
    if not fits_context(prompt_tokens, n_ctx, max_tokens):
        raise ContextLengthError(prompt_tokens, n_ctx, max_tokens)


def watermark_applies(scheme: Scheme | None, params: SamplingParams) -> bool:
    """Whether a request's output is watermarked: a scheme is configured, the request did not opt
    out, and it samples (greedy decoding has no randomness to carry a sampling watermark)."""
    return scheme is not None and params.watermark and not params.greedy


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    watermark: Scheme | None = None  # the model's scheme; used when `watermark_applies`
    adapters: AdapterSet = ()  # LoRA adapters to run with (ids from Backend.load_adapter)
    sink: Any = None  # where the submitter wants this request's chunks delivered (the server's queue)
    human_claim_rail: bool = False  # rewrite first-person claims of being human (chat answers)
    must_disclose: bool = False  # the user asked whether they talk to a machine: the answer says so
    policy: dict[str, Any] | None = None  # the request policy's decision on its prompt (hallmark.policy)
    grammar: Grammar | None = None  # what the output must be (JSON schema, grammar); engine/grammar.py

    # -- engine state -----------------------------------------------------------------------------
    status: RequestStatus = field(default=RequestStatus.WAITING, init=False)
    cancel_requested: bool = field(default=False, init=False)
    slot: int = field(default=-1, init=False)  # KV-cache sequence id while admitted
    seed: int = field(init=False)
    arrival_time: float = field(default_factory=time.perf_counter, init=False)
    num_prefilled: int = field(default=0, init=False)  # prompt tokens in the KV cache
    num_cached: int = field(default=0, init=False)  # of those, reused from the slot's previous occupant
    output_ids: list[int] = field(default_factory=list, init=False)
    stop_reason: StopReason | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.seed = self.params.seed if self.params.seed is not None else new_seed()
        self.sampler = Sampler(self.params, self.seed)
        self.rail = HumanClaimRail(must_disclose=self.must_disclose) if self.human_claim_rail else None
        self.stream = TextStream(self.params.stop, self.rail)
        self.watermarker = (
            SequenceWatermarker(self.watermark) if watermark_applies(self.watermark, self.params) else None
        )
        self.logprobs: list[TokenLogprob] | None = [] if self.params.logprobs is not None else None
        self.context = list(self.prompt_ids)  # prompt + output, for the penalties
        self.grammar_state: GrammarState | None = None  # made at the first token (needs the tokenizer)
        self.prompt_ms = 0.0
        self._decode_start = 0.0
        self.drafts: DraftState | None = None  # set by a scheduler that speculates (engine/speculative.py)

    # -- checks -----------------------------------------------------------------------------------
    def validate(self, n_ctx: int, n_vocab: int) -> None:
        """Raise the user-facing error for a request that cannot run, before any work is done."""
        if not self.prompt_ids:
            raise PromptError("the prompt is empty (it tokenizes to no tokens)")
        check_fits(len(self.prompt_ids), n_ctx)
        bias = self.params.logit_bias
        if bias and max(bias) >= n_vocab:
            raise InvalidSamplingError(
                f"logit_bias token id {max(bias)} is outside the vocabulary (size {n_vocab})",
                param="logit_bias",
            )

    # -- state ------------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status.done

    @property
    def cancelled(self) -> bool:
        return self.status is RequestStatus.CANCELLED

    @property
    def prefilling(self) -> bool:
        return self.num_prefilled < len(self.prompt_ids)

    @property
    def next_prompt_tokens(self) -> list[int]:
        return self.prompt_ids[self.num_prefilled :]

    @property
    def last_token(self) -> int:
        return self.output_ids[-1]

    def start_decoding(self, now: float) -> None:
        self.status = RequestStatus.DECODING
        self.prompt_ms = (now - self.arrival_time) * 1e3
        self._decode_start = time.perf_counter()

    # -- one step ---------------------------------------------------------------------------------
    def accept(self, logits: np.ndarray, tokenizer: Any, n_ctx: int, model_name: str) -> StreamChunk:
        """Sample the next token from `logits`, append it and return what the stream releases.

        `tokenizer` gives the token's bytes and end-of-generation status (the backend).
        """
        allowed = None
        if self.grammar is not None:
            if self.grammar_state is None:
                self.grammar_state = GrammarState(self.grammar, tokenizer)
            allowed = self.grammar_state.allowed()
        token = self.sampler.sample(logits, self.context, len(self.output_ids), self.watermarker, allowed)
        lp = self._logprob(logits, token, tokenizer) if self.logprobs is not None else None
        # A grammar allows the end only where its output is complete; ignore_eos cannot apply then.
        if tokenizer.is_eog(token) and (not self.params.ignore_eos or self.grammar is not None):
            self.stop_reason = StopReason.EOS
            return self._chunk(self.stream.finish(), [], None, model_name)
        self.output_ids.append(token)
        self.context.append(token)
        if self.grammar_state is not None:
            self.grammar_state.advance(token)
        if lp is not None:
            self.logprobs.append(lp)
        text = self.stream.push(tokenizer.token_bytes(token))
        if self.stream.stop_found is not None:
            self.stop_reason = StopReason.STOP_STRING
        elif self.grammar_state is not None and self.grammar_state.complete:
            self.stop_reason = StopReason.GRAMMAR_COMPLETE
        elif self.params.max_tokens is not None and len(self.output_ids) >= self.params.max_tokens:
            self.stop_reason = StopReason.MAX_TOKENS
        elif len(self.context) >= n_ctx:
            self.stop_reason = StopReason.CONTEXT_FULL
        if self.stop_reason is not None:
            text += self.stream.finish()
        return self._chunk(text, [token], lp, model_name)

    def accept_draft(
        self, rows: np.ndarray, draft: list[int], tokenizer: Any, n_ctx: int, model_name: str
    ) -> StreamChunk:
        """Accept what one verification step decided: `rows` are the logits after the last token and
        after each drafted token. Samples position by position as `accept` would one step at a time,
        keeping drafted tokens while each is the token sampled there; the first sampled token that
        differs is kept too (it is the real next token). Returns the step's tokens as one chunk."""
        chunks = []
        accepted = 0
        for i, row in enumerate(rows[: len(draft) + 1]):
            n_before = len(self.output_ids)
            chunks.append(self.accept(row, tokenizer, n_ctx, model_name))
            if chunks[-1].final is not None or i == len(draft):
                break
            if len(self.output_ids) == n_before or self.output_ids[-1] != draft[i]:
                break
            accepted += 1
        if self.drafts is not None:
            self.drafts.record(len(draft), accepted)
        return merge_chunks(chunks)

    def _logprob(self, logits: np.ndarray, token: int, tokenizer: Any) -> TokenLogprob:
        logprob, top = token_logprob(logits, token, self.params.logprobs or 0)
        text = tokenizer.detokenize
        return TokenLogprob(
            token=token,
            text=text([token]),
            logprob=logprob,
            top=[TopLogprob(token=t, text=text([t]), logprob=v) for t, v in top],
        )

    def _chunk(self, text: str, tokens: list[int], lp: TokenLogprob | None, model_name: str) -> StreamChunk:
        final = None
        if self.stop_reason is not None:
            self.status = RequestStatus.FINISHED
            final = self.result(model_name)
        return StreamChunk(
            text=text, token_ids=tokens, logprobs=[lp] if lp is not None else None, final=final
        )

    def result(self, model_name: str) -> GenerationResult:
        assert self.stop_reason is not None
        parsed, parse_error = self._parse()
        return GenerationResult(
            text=self.stream.text,
            token_ids=list(self.output_ids),
            finish_reason=self.stop_reason.finish_reason,
            stop_reason=self.stop_reason,
            prompt_tokens=len(self.prompt_ids),
            timings=Timings(
                prompt_n=len(self.prompt_ids) - self.num_cached,
                prompt_ms=self.prompt_ms,
                cache_n=self.num_cached,
                predicted_n=len(self.output_ids),
                predicted_ms=(time.perf_counter() - self._decode_start) * 1e3,
                draft_n=self.drafts.drafted if self.drafts is not None else 0,
                draft_n_accepted=self.drafts.accepted if self.drafts is not None else 0,
            ),
            model=model_name,
            seed=None if self.params.greedy else self.seed,
            stop_string=self.stream.stop_found,
            logprobs=self.logprobs,
            watermark=self._watermark_info(),
            human_claims_replaced=self.rail.rewrites if self.rail is not None else 0,
            disclosure_added=self.rail.disclosed if self.rail is not None else False,
            policy=self.policy,
            parsed=parsed,
            parse_error=parse_error,
        )

    def _parse(self) -> tuple[Any, str | None]:
        """The output as the grammar's value (a dict, a pydantic instance); never a cut-off output."""
        if self.grammar is None or self.grammar.parse is None:
            return None, None
        if self.stop_reason not in (StopReason.EOS, StopReason.GRAMMAR_COMPLETE):
            return None, f"the output is incomplete: generation ended by {self.stop_reason.value}"
        try:
            return self.grammar.parse(self.stream.text), None
        except ValueError as e:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
            return None, f"the output does not parse: {e}"

    def _watermark_info(self) -> WatermarkInfo:
        spec_id = self.watermark.spec.spec_id if self.watermark is not None else None
        if self.watermarker is not None:
            return WatermarkInfo(spec_id, True, self.watermarker.marked)
        if self.params.greedy:
            reason = "greedy decoding (temperature 0) has no randomness to carry a sampling watermark"
        elif not self.params.watermark:
            reason = "watermark turned off for this request"
        else:
            reason = "this model has no watermark configured"
        return WatermarkInfo(spec_id, False, 0, reason)

    def copy_with(self, params: SamplingParams) -> Request:
        """A fresh request for the same prompt, watermark and adapters with other sampling parameters."""
        return Request(
            self.prompt_ids,
            params,
            self.watermark,
            self.adapters,
            human_claim_rail=self.human_claim_rail,
            must_disclose=self.must_disclose,
            policy=self.policy,
            grammar=self.grammar,
        )


def merge_chunks(chunks: list[StreamChunk]) -> StreamChunk:
    """Several consecutive chunks of one request as one (a verification step's tokens)."""
    if len(chunks) == 1:
        return chunks[0]
    logprobs = [lp for c in chunks for lp in (c.logprobs or [])]
    return StreamChunk(
        text="".join(c.text for c in chunks),
        token_ids=[t for c in chunks for t in c.token_ids],
        logprobs=logprobs if any(c.logprobs is not None for c in chunks) else None,
        final=chunks[-1].final,
    )
