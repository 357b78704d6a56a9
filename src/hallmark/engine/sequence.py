"""One generation in progress: its tokens, sampler, text stream and finish condition."""

from __future__ import annotations

import time

import numpy as np

from hallmark.backends.base import Backend
from hallmark.engine.detokenize import TextStream
from hallmark.engine.results import (
    GenerationResult,
    StreamChunk,
    Timings,
    TokenLogprob,
    TopLogprob,
    WatermarkInfo,
)
from hallmark.engine.sampler import Sampler, token_logprob
from hallmark.engine.sampling import SamplingParams
from hallmark.watermark.schemes import Scheme, SequenceWatermarker


class Sequence:
    def __init__(
        self,
        slot: int,
        prompt_ids: list[int],
        params: SamplingParams,
        backend: Backend,
        model_name: str,
        seed: int | None,
        watermark: Scheme | None = None,
    ):
        self.slot = slot
        self.prompt_ids = prompt_ids
        self.params = params
        self.backend = backend
        self.model_name = model_name
        self.seed = None if params.greedy else seed
        self.sampler = Sampler(params, seed or 0)
        self.output_ids: list[int] = []
        self.context: list[int] = list(prompt_ids)  # prompt + output, for the penalties
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs is not None else None
        self.stream = TextStream(params.stop)
        self.watermarker: SequenceWatermarker | None = None
        if watermark is not None and params.watermark and not params.greedy:
            self.watermarker = SequenceWatermarker(watermark)
        self.watermark_spec_id = watermark.spec.spec_id if watermark is not None else None
        self.stop_reason: str | None = None
        self.prompt_ms = 0.0
        self.cached = 0  # prompt tokens whose KV entries were reused
        self._decode_start = 0.0

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def last_token(self) -> int:
        return self.output_ids[-1]

    def start_decoding(self, prompt_ms: float, cached: int = 0) -> None:
        self.prompt_ms = prompt_ms
        self.cached = cached
        self._decode_start = time.perf_counter()

    def accept(self, logits: np.ndarray) -> StreamChunk:
        """Sample the next token from `logits`, append it and return what the stream releases."""
        token = self.sampler.sample(logits, self.context, len(self.output_ids), self.watermarker)
        lp = None
        if self.logprobs is not None:
            lp = self._logprob(logits, token)
        eog = self.backend.is_eog(token) and not self.params.ignore_eos
        if eog:
            self.stop_reason = "eos"
            text = self.stream.finish()
            return self._chunk(text, [], None)
        self.output_ids.append(token)
        self.context.append(token)
        if lp is not None:
            self.logprobs.append(lp)
        text = self.stream.push(self.backend.token_bytes(token))
        if self.stream.stop_found is not None:
            self.stop_reason = "stop_string"
        elif self.params.max_tokens is not None and len(self.output_ids) >= self.params.max_tokens:
            self.stop_reason = "max_tokens"
        elif len(self.context) >= self.backend.n_ctx:
            self.stop_reason = "context_full"
        if self.finished:
            text += self.stream.finish()
        return self._chunk(text, [token], lp)

    def _logprob(self, logits: np.ndarray, token: int) -> TokenLogprob:
        logprob, top = token_logprob(logits, token, self.params.logprobs or 0)
        text = self.backend.detokenize
        return TokenLogprob(
            token=token,
            text=text([token]),
            logprob=logprob,
            top=[TopLogprob(token=t, text=text([t]), logprob=v) for t, v in top],
        )

    def _chunk(self, text: str, tokens: list[int], lp: TokenLogprob | None) -> StreamChunk:
        return StreamChunk(
            text=text,
            token_ids=tokens,
            logprobs=[lp] if lp is not None else None,
            final=self.result() if self.finished else None,
        )

    def result(self) -> GenerationResult:
        assert self.stop_reason is not None
        return GenerationResult(
            text=self.stream.text,
            token_ids=list(self.output_ids),
            finish_reason="stop" if self.stop_reason in ("eos", "stop_string") else "length",
            stop_reason=self.stop_reason,
            prompt_tokens=len(self.prompt_ids),
            timings=Timings(
                prompt_n=len(self.prompt_ids) - self.cached,
                prompt_ms=self.prompt_ms,
                cache_n=self.cached,
                predicted_n=len(self.output_ids),
                predicted_ms=(time.perf_counter() - self._decode_start) * 1e3,
            ),
            model=self.model_name,
            seed=self.seed,
            stop_string=self.stream.stop_found,
            logprobs=self.logprobs,
            watermark=self._watermark_info(),
        )

    def _watermark_info(self) -> WatermarkInfo:
        if self.watermarker is not None:
            return WatermarkInfo(self.watermark_spec_id, True, self.watermarker.marked)
        if self.params.greedy:
            reason = "greedy decoding (temperature 0) has no randomness to carry a sampling watermark"
        elif not self.params.watermark:
            reason = "watermark turned off for this request"
        else:
            reason = "this model has no watermark configured"
        return WatermarkInfo(self.watermark_spec_id, False, 0, reason)
