"""The Python API: `load()` a model, then `generate()` or `chat()` with it.

A model can run with LoRA adapters (`load(name, lora=...)`, a registered fine-tuned name, or
`Model.with_adapters` for another set on the same loaded weights): every request it builds runs
with its adapter set, its name says so ("smollm2-135m-instruct+my-adapter"), and its provenance
manifests list each adapter's file hash. An adapter is checked against the base before llama.cpp
sees it: the architecture it was made for, and the base file's sha256 when hallmark's exporter
recorded it (`hallmark.base.sha256`); a mismatch is a one-line ModelFileError naming both. The
watermark is the base's: the tokenizer, and so the spec, are the same.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hallmark.backends import AdapterSet, Backend, BackendConfig, Tokenizer, adapter_set, open_backend
from hallmark.catalog import DEFAULT_MODEL, CatalogEntry, resolve
from hallmark.engine.chat import FALLBACK_STOP, render_chat_segments, tokenize_chat, validate_messages
from hallmark.engine.generate import generate_stream, in_order
from hallmark.engine.grammar import Grammar, grammar_tokenizer, response_format_grammar
from hallmark.engine.rails import DEFAULT_DISCLOSURE, NO_DISCLOSURE, Disclosure, asks_if_human
from hallmark.engine.request import Request
from hallmark.engine.results import GenerationResult, StreamChunk
from hallmark.engine.sampling import SamplingParams, sampling_params
from hallmark.engine.scoring import TokenStatistics, sliding_token_logprobs, sliding_token_statistics
from hallmark.engine.speculative import SpeculativeConfig
from hallmark.engine.tools import check_template_data
from hallmark.errors import HallmarkError, ModelFileError, PromptError, WatermarkSpecError, check_unicode
from hallmark.gguf_info import AdapterInfo, read_adapter_info
from hallmark.policy import Policy, PolicyViolation, load_policy
from hallmark.provenance import ai_disclosure, build_manifest, model_sha256
from hallmark.registry import RegistryEntry
from hallmark.watermark.keys import default_key, find_key
from hallmark.watermark.schemes import Scheme, make_scheme
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES, WatermarkSpec

# A LoRA adapter argument: a path, a (path, scale) pair, or a list of either.
LoraPath = str | os.PathLike[str]
LoraItem = LoraPath | tuple[LoraPath, float]
LoraArg = LoraItem | Sequence[LoraItem]


@dataclass(frozen=True)
class LoadedAdapter:
    """A LoRA adapter a Model runs with."""

    name: str  # the file's stem, as the model's name shows it
    path: Path
    scale: float
    id: str  # the backend's id for it (Backend.load_adapter)
    sha256: str  # of the adapter file, which manifests cite

    def to_manifest(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "scale": format(self.scale, "g")}


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str | os.PathLike)
        and isinstance(item[1], int | float)
        and not isinstance(item[1], bool)
    )


def lora_list(lora: LoraArg | None) -> list[tuple[Path, float]]:
    """(path, scale) for each adapter of a `lora` argument: a path (scale 1), a (path, scale) pair,
    or a list of paths and pairs."""
    if lora is None:
        return []
    items = [lora] if isinstance(lora, str | os.PathLike) or _is_pair(lora) else list(lora)  # type: ignore[arg-type]
    out: list[tuple[Path, float]] = []
    for item in items:
        if isinstance(item, str | os.PathLike):
            path, scale = Path(item), 1.0
        elif _is_pair(item):
            path, scale = Path(item[0]), float(item[1])  # type: ignore[index]
        else:
            raise HallmarkError(f"lora: expected a path or a (path, scale) pair, got {item!r}")
        if not math.isfinite(scale):
            raise HallmarkError(f"lora: the scale of {path.name} must be a finite number, got {scale}")
        out.append((path.expanduser(), scale))
    return out


def parse_lora_arg(text: str) -> tuple[str, float]:
    """'PATH[:SCALE]' -> (path, scale): the command line's form of an adapter. A ':' followed by
    something that is not a number belongs to the path."""
    path, sep, scale = text.rpartition(":")
    if sep and path:
        try:
            value = float(scale)
        except ValueError:
            return text, 1.0
        if not math.isfinite(value):
            raise HallmarkError(f"--lora {text}: the scale must be a finite number")
        return path, value
    return text, 1.0


def adapter_model_name(base: str, adapters: Sequence[LoadedAdapter]) -> str:
    """The name of a base model running with adapters: 'base+adapter1+adapter2'."""
    return "+".join([base, *(a.name for a in adapters)])


class Model:
    """A loaded model. Not thread-safe: use one per thread, or the server's scheduler."""

    def __init__(
        self,
        backend: Backend,
        name: str,
        *,
        path: Path | None = None,
        entry: CatalogEntry | None = None,
        load_seconds: float = 0.0,
        watermark: str | None = DEFAULT_SCHEME,
        watermark_key: str | None = None,
        disclosure: Disclosure = DEFAULT_DISCLOSURE,
        policy: Policy | None = None,
        base_name: str | None = None,
        registry: RegistryEntry | None = None,
    ):
        """Wrap an open backend (`hallmark.load` opens one from a model name or file, with the
        default request policy; a Model built directly screens nothing unless given a policy).

        `base_name` names the weights the backend holds (default: `name`); `registry` is the
        registry entry of a registered fine-tuned model. Adapters are added by `load(lora=...)`
        and `with_adapters`."""
        self.name = name
        self.base_name = base_name or name
        self.registry = registry
        self.adapters: tuple[LoadedAdapter, ...] = ()  # LoRA adapters every request runs with
        self.path = path
        self.backend = backend
        self.disclosure = disclosure  # how chats say they come from an AI (hallmark.engine.rails)
        self.policy = policy  # screens every request before generation (hallmark.policy)
        self.entry = entry
        self.load_seconds = load_seconds
        meta = backend.metadata()
        self.chat_template: str | None = meta.get("tokenizer.chat_template") or None
        self.architecture = meta.get("general.architecture", "unknown")
        self._free_slots = list(range(backend.max_sequences))  # KV-cache slots not held by a stream
        # Speculative decoding by prompt lookup (engine/speculative.py); None: one token per step.
        self.speculative: SpeculativeConfig | None = None
        if watermark is not None and watermark not in SCHEMES:
            raise WatermarkSpecError(f"unknown watermark scheme {watermark!r}; known: {', '.join(SCHEMES)}")
        self._watermark_scheme_name = watermark
        self._watermark_key_name = watermark_key
        self._watermark: Scheme | None = None

    # -- watermark ------------------------------------------------------------------------------
    @property
    def watermark(self) -> Scheme | None:
        """The model's watermark scheme, keyed and bound to its tokenizer (None if turned off).

        Built on first use, so that loading a model never creates a key; the first watermarked
        generation creates the user's default key if there is none yet (and says where).
        """
        if self._watermark is None and self._watermark_scheme_name is not None:
            key = find_key(self._watermark_key_name) if self._watermark_key_name else default_key()
            spec = WatermarkSpec.create(self._watermark_scheme_name, key.key_id, self.fingerprint)
            self._watermark = make_scheme(spec, key.secret)
        return self._watermark

    @property
    def watermark_spec(self) -> WatermarkSpec | None:
        return self.watermark.spec if self.watermark is not None else None

    def _scheme_for(self, params: SamplingParams) -> Scheme | None:
        # Greedy or opted-out requests need no key: do not create one for them.
        if params.greedy or not params.watermark:
            return self._watermark
        return self.watermark

    # -- LoRA adapters --------------------------------------------------------------------------
    @property
    def adapter_set(self) -> AdapterSet:
        """The adapter set (backend ids and scales) this model's requests run with; () = the base."""
        return adapter_set([(a.id, a.scale) for a in self.adapters])

    def with_adapters(
        self, lora: LoraArg | None, name: str | None = None, registry: RegistryEntry | None = None
    ) -> Model:
        """A view of this model with other LoRA adapters on the same loaded weights.

        The view shares the backend (weights, KV caches, sequence slots), so it costs only the
        adapters; requests of both may run in one batch (the server serves a base and its adapters
        this way). Its adapters replace this model's, on the base weights; `name` defaults to the
        base's name followed by the adapters' ('smollm2-135m-instruct+my-adapter'). Closing either
        closes the backend of both.
        """
        view = copy.copy(self)  # shares the backend and the list of free slots
        view.adapters = ()
        view.registry = registry
        view._attach_adapters([(read_adapter_info(path), scale) for path, scale in lora_list(lora)])
        view.name = name or adapter_model_name(self.base_name, view.adapters)
        return view

    def _attach_adapters(self, adapters: Sequence[tuple[AdapterInfo, float]]) -> None:
        """Check each adapter against the base model, load it into the backend, and add it."""
        loaded = list(self.adapters)
        for info, scale in adapters:
            path = info.path.resolve()
            if any(a.path == path for a in loaded):
                raise ModelFileError(f"the LoRA adapter {path} is given twice")
            self._check_adapter(info)
            adapter_id = self.backend.load_adapter(str(path))  # llama.cpp's refusal: a ModelFileError
            loaded.append(LoadedAdapter(path.stem, path, scale, adapter_id, model_sha256(path)))
        self.adapters = tuple(loaded)

    def _check_adapter(self, info: AdapterInfo) -> None:
        """A one-line ModelFileError naming the adapter and the base unless it was made for this base."""
        if info.architecture != self.architecture:
            made_for = info.architecture or "no architecture (general.architecture is missing)"
            raise ModelFileError(
                f"the LoRA adapter {info.path.name} is for {made_for}, but {self.base_name} is "
                f"{self.architecture}: it was made for another base model"
            )
        if info.base_sha256 is not None and info.base_sha256 != self.sha256:
            raise ModelFileError(
                f"the LoRA adapter {info.path.name} was trained on another base model (sha256 "
                f"{info.base_sha256[:12]}...), not {self.base_name} (sha256 {self.sha256[:12]}...)"
            )

    # -- tokens ---------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.backend.n_vocab

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer (detection and token-level output need only this)."""
        return self.backend

    @functools.cached_property
    def sha256(self) -> str:
        """The model file's sha256 (cached on disk by hallmark.provenance), which manifests cite."""
        if self.path is None:  # a backend without a file (the tests' fake): its name stands in
            return hashlib.sha256(f"hallmark-model-without-a-file\0{self.name}".encode()).hexdigest()
        return model_sha256(self.path)

    def sign(
        self, result: GenerationResult, request_id: str | None = None, disclosure: str | None = None
    ) -> dict[str, Any]:
        """Sign a provenance manifest for a result of this model, store it in `result.provenance`
        and return it (hallmark.provenance; `hallmark verify` checks it)."""
        wm = result.watermark
        spec_id = wm.spec_id if wm is not None else None
        applied = bool(wm and wm.applied)
        result.provenance = build_manifest(
            text=result.text,
            model=self.name,
            model_sha256=self.sha256,
            watermark_spec_id=spec_id,
            watermark_applied=applied,
            policy_name=self.policy.name if self.policy is not None and self.policy.enabled else None,
            policy_sha256=self.policy.sha256 if self.policy is not None and self.policy.enabled else None,
            disclosure=disclosure or ai_disclosure(self.name, spec_id, applied, result.seed is None),
            request_id=request_id,
            adapters=[a.to_manifest() for a in self.adapters],
        )
        return result.provenance

    @functools.cached_property
    def longest_token(self) -> int:
        """Bytes in the vocabulary's longest token, so that a text of N characters is known to be at
        least N / longest_token tokens without tokenizing it (a 100 MB prompt took 34 s to refuse)."""
        tok = self.backend
        return max(1, max(len(tok.token_bytes(t)) for t in range(tok.n_vocab)))

    @property
    def fingerprint(self) -> str:
        """The tokenizer's fingerprint, which watermark specs name."""
        return self.backend.fingerprint()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`. Control-token markup in it ('<|im_end|>') stays text unless
        `parse_special` is set: prompts from users must never act as a chat template's markup."""
        check_unicode(text, "the prompt")
        return self.backend.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.backend.detokenize(tokens)

    # -- generation -----------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        stream: bool = False,
        params: SamplingParams | None = None,
        response_format: Any = None,
        **sampling: Any,
    ) -> GenerationResult | Iterator[StreamChunk]:
        """Continue `prompt` (text, or token ids used as they are).

        Keyword arguments are SamplingParams fields (temperature, seed, stop, max_tokens, ...).
        With stream=True, returns an iterator of StreamChunk; the last one carries `.final`.
        `response_format` constrains the output (engine/grammar.py): a JSON schema dict, a pydantic
        model class, OpenAI's {"type": "json_object"} / {"type": "json_schema", ...}, or a Grammar;
        the result's `.parsed` is then the output as a dict or a model instance.
        """
        grammar = response_format_grammar(response_format)
        request = self.prompt_request(prompt, sampling_params(params, **sampling), grammar=grammar)
        return self._run(request, stream)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
        params: SamplingParams | None = None,
        response_format: Any = None,
        **sampling: Any,
    ) -> GenerationResult | Iterator[StreamChunk]:
        """Answer the last message of a conversation ([{"role": ..., "content": ...}, ...]).

        `response_format` as for `generate`."""
        grammar = response_format_grammar(response_format)
        request = self.chat_request(messages, sampling_params(params, **sampling), grammar=grammar)
        return self._run(request, stream)

    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[int]],
        *,
        params: SamplingParams | None = None,
        response_format: Any = None,
        **sampling: Any,
    ) -> list[GenerationResult]:
        """Generate for several prompts together: one decode call per step holds a token of each
        running sequence; beyond the model's `max_sequences`, prompts wait for a free sequence.
        `response_format` (as for `generate`) constrains every output."""
        p = sampling_params(params, **sampling)
        grammar = response_format_grammar(response_format)
        requests = [self.prompt_request(prompt, p, grammar=grammar) for prompt in prompts]
        results: list[GenerationResult | None] = [None] * len(requests)
        for i, result in self.generate_requests(requests):
            results[i] = result
        return in_order(results)

    def generate_requests(self, requests: Sequence[Request]) -> Iterator[tuple[int, GenerationResult]]:
        """Run prepared requests together; yield (index, result) as each one finishes."""
        if not requests:
            return
        for i, chunk in self._stream(list(requests)):  # the scheduler validates each request
            if chunk.final is not None:
                yield i, chunk.final

    def prompt_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams,
        *,
        screen: bool = True,
        grammar: Grammar | None = None,
    ) -> Request:
        """A request to continue `prompt`, watermarked with this model's scheme unless params say not.

        The request policy screens the prompt first (token ids: their text) and raises
        PolicyViolation for one it refuses. Task prompts (`screen=False`) hold a document to work
        on, not a request, and are not screened.
        """
        ids = self._prompt_ids(prompt)
        self._prepare(grammar)
        decision = (
            self.screen(prompt if isinstance(prompt, str) else self.detokenize(ids)) if screen else None
        )
        return Request(
            ids, params, self._scheme_for(params), self.adapter_set, policy=decision, grammar=grammar
        )

    def chat_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams,
        *,
        conversation: bool = True,
        grammar: Grammar | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> Request:
        """A request answering `messages` through the chat template.

        A conversation with a person (`conversation=True`, the default) is screened by the request
        policy (PolicyViolation if it refuses) and gets the model's disclosure: its instruction in
        the system prompt and the human-claim rail on the answer. Task prompts (translate,
        summarize, answer) are not conversations and go as they are. An answer constrained by a
        `grammar` is data for a program, which the rail's rewriting would make invalid: it keeps the
        disclosure instruction but not the rail (unless the grammar admits prose, as tool
        calling's `auto` does). `tools` is the chat template's `tools` variable
        (OpenAI's tool objects; engine/tools.py prepares them and the messages).
        """
        if not self.chat_template:  # the plain fallback format ends a turn where the next "User:" starts
            params = params.with_overrides(stop=tuple(params.stop) + FALLBACK_STOP)
        self._prepare(grammar)
        # Before the disclosure's system message is added, so that errors name the caller's indices
        # (and a string or a list of strings is a ChatFormatError, not a TypeError in the rail).
        validate_messages(messages)
        if tools is not None or any(isinstance(m, Mapping) and m.get("tool_calls") for m in messages):
            check_template_data(self.backend, tools, messages)
        disclosure = self.disclosure if conversation else NO_DISCLOSURE
        # A grammar makes the answer data, which the rail's rewriting would break, unless it admits
        # prose (tool calling's auto answer).
        rail = disclosure.rail and (grammar is None or grammar.prose)
        ids = self.chat_prompt_ids(disclosure.apply(messages), tools=tools)  # checks the messages first
        decision = self.screen(messages) if conversation else None  # what the user wrote, not our instruction
        return Request(
            ids,
            params,
            self._scheme_for(params),
            self.adapter_set,
            human_claim_rail=rail,
            must_disclose=rail and asks_if_human(_last_user_text(messages)),
            policy=decision,
            grammar=grammar,
        )

    def _prepare(self, grammar: Grammar | None) -> None:
        """Build llguidance's view of the vocabulary (1.6 s for a 262k vocabulary, once) on the
        caller's thread, so the first constrained request does not stall the server's engine thread."""
        if grammar is not None:
            grammar_tokenizer(self.backend)

    def screen(self, prompt: str | Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """The request policy's decision on a prompt or a conversation, with the policy's name and
        hash (None when no policy is on). Raises PolicyViolation when the policy refuses it."""
        if self.policy is None or not self.policy.enabled:
            return None
        if isinstance(prompt, str):
            decision = self.policy.screen(prompt)
        else:
            decision = self.policy.screen_messages([dict(m) for m in prompt if isinstance(m, Mapping)])
        record = {"policy": self.policy.name, "policy_sha256": self.policy.sha256, **decision.to_dict()}
        try:
            self.policy.check(decision)
        except PolicyViolation as e:
            e.decision = record  # what the server's request log keeps of a refusal
            raise
        return record

    def token_logprobs(
        self,
        text: str | Sequence[int],
        *,
        window: int | None = None,
        stride: int | None = None,
        on_window: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Log-probability of each token of `text` given the ones before it (the first is skipped),
        with this model's adapters.

        A text longer than `window` tokens (default: the context window) is scored with a sliding
        window that moves by `stride` tokens (default: half the window) and scores only the tokens
        that are new in each window (hallmark.engine.scoring). `on_window(n)` is called after each
        window with the tokens it scored.
        """
        return self._score(sliding_token_logprobs, text, window, stride, on_window)

    def token_statistics(
        self,
        text: str | Sequence[int],
        *,
        window: int | None = None,
        stride: int | None = None,
        on_window: Callable[[int], None] | None = None,
    ) -> TokenStatistics:
        """Per-token log-probability, log-rank, entropy and log-probability variance of `text`
        (hallmark.engine.scoring.TokenStatistics), from the same pass and windows as `token_logprobs`."""
        return self._score(sliding_token_statistics, text, window, stride, on_window)

    def _score(
        self,
        scorer: Callable[..., Any],
        text: str | Sequence[int],
        window: int | None,
        stride: int | None,
        on_window: Callable[[int], None] | None,
    ) -> Any:
        """Run a sliding-window scorer of hallmark.engine.scoring on a free sequence slot."""
        window, stride = self.scoring_window(window, stride)
        if not self._free_slots:
            raise HallmarkError("every sequence slot is busy with a stream; finish or close one first")
        slot = self._free_slots.pop()
        try:
            return scorer(
                self.backend, slot, self._prompt_ids(text), window, stride, self.adapter_set, on_window
            )
        finally:
            self._free_slots.append(slot)

    def scoring_window(self, window: int | None = None, stride: int | None = None) -> tuple[int, int]:
        """The sliding window `token_logprobs` scores with: (window, stride), defaults filled in
        (the context window, and half of it), checked (PromptError)."""
        window = window or self.n_ctx
        if not 2 <= window <= self.n_ctx:
            raise PromptError(f"the window must be 2 to {self.n_ctx} tokens (the context), got {window}")
        stride = stride or max(1, window // 2)
        if not 1 <= stride < window:
            raise PromptError(
                f"the stride must be 1 to {window - 1} tokens (less than the window), got {stride}"
            )
        return window, stride

    def perplexity(
        self, text: str | Sequence[int], *, window: int | None = None, stride: int | None = None
    ) -> float:
        """exp(mean negative log-likelihood) of `text` under this model (sliding windows beyond
        `window` tokens, as `token_logprobs`)."""
        lp = self.token_logprobs(text, window=window, stride=stride)
        if lp.size == 0:
            raise PromptError("perplexity needs at least two tokens")
        return float(np.exp(-lp.mean()))

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return "".join(text for text, _ in self._chat_segments(messages))

    def chat_prompt_ids(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Token ids of the rendered conversation; text in the messages never becomes a control token.

        With add_generation_prompt (the default) the ids end where the assistant's answer starts;
        without, they end as the template closes the last message (fine-tuning trains on that end)."""
        segments = self._chat_segments(messages, add_generation_prompt, tools)
        bos = self.backend.token_text(self.backend.bos_token)
        # Templates that write the BOS token themselves must not get a second one from the tokenizer.
        template_wrote_bos = (
            bool(bos) and bool(segments) and not segments[0][1] and segments[0][0].startswith(bos)
        )
        return tokenize_chat(self.backend, segments, add_bos=not template_wrote_bos)

    def _chat_segments(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, bool]]:
        listed = messages if isinstance(messages, Sequence) and not isinstance(messages, str) else ()
        for m in listed:
            if isinstance(m, Mapping) and isinstance(m.get("content"), str):
                check_unicode(m["content"], "a message")
        tok = self.backend
        if tools is not None or any(isinstance(m, Mapping) and m.get("tool_calls") for m in listed):
            check_template_data(tok, tools, listed)  # the template writes these as markup
        return render_chat_segments(
            messages,
            self.chat_template,
            bos_token=tok.token_text(tok.bos_token),
            eos_token=tok.token_text(tok.eos_token),
            add_generation_prompt=add_generation_prompt,
            tools=tools,
        )

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt)
        ids = [int(t) for t in prompt]
        bad = [t for t in ids if not 0 <= t < self.backend.n_vocab]
        if bad:
            raise PromptError(
                f"prompt token id {bad[0]} is outside the vocabulary (size {self.backend.n_vocab})"
            )
        return ids

    def _run(self, request: Request, stream: bool) -> GenerationResult | Iterator[StreamChunk]:
        request.validate(self.n_ctx, self.n_vocab)  # errors surface at the call, not at the first chunk
        chunks = (chunk for _, chunk in self._stream([request]))
        if stream:
            return chunks
        for chunk in chunks:
            if chunk.final is not None:
                return chunk.final
        raise AssertionError("generation ended without a final result")

    def _stream(self, requests: list[Request]) -> Iterator[tuple[int, StreamChunk]]:
        """Hold KV-cache slots for the requests while their generation runs.

        Up to one slot per request is taken when iteration starts and given back when it ends or
        the iterator is closed, so several open streams on one model never share a slot. More
        requests than free slots run in turn: each waits for a sequence to finish.
        """
        if not self._free_slots:
            raise HallmarkError(
                f"all of the model's {self.backend.max_sequences} sequence slots are held by open "
                f"streams; finish or close one, or load the model with a larger max_sequences"
            )
        slots = [self._free_slots.pop() for _ in range(min(len(requests), len(self._free_slots)))]
        try:
            for i, chunk in generate_stream(self.backend, requests, self.name, slots, self.speculative):
                if chunk.final is not None:
                    self.sign(chunk.final)
                yield i, chunk
        finally:
            self._free_slots.extend(slots)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, path={str(self.path)!r}, n_ctx={self.n_ctx})"


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The content of the last user message ("" if none): what a sincere "are you human?" would be."""
    for m in reversed(messages):
        if isinstance(m, Mapping) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def load(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    n_ctx: int | None = None,
    max_sequences: int = 1,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    flash_attn: bool = True,
    show_progress: bool = True,
    watermark: str | None = DEFAULT_SCHEME,
    watermark_key: str | None = None,
    policy: str | os.PathLike[str] | Policy | None = None,
    lora: LoraArg | None = None,
    speculative: bool | SpeculativeConfig = False,
) -> Model:
    """Load a catalog model by name (default: $HALLMARK_MODEL or smollm2-135m-instruct), a
    registered fine-tuned model by name (`hallmark models`), or a .gguf path.

    `watermark` is the scheme sampled output is watermarked with ("gumbel" or "kgw"; None turns
    it off for this model); `watermark_key` names a stored key (default: $HALLMARK_WATERMARK_KEY,
    else the user's default key). `policy` is the request policy (docs/policy.md): a YAML file,
    "default", "off", or a loaded Policy; None means $HALLMARK_POLICY, else the shipped default.
    Its disclosure settings decide how chats say they come from an AI. `lora`: LoRA adapter GGUFs
    every request runs with, after a registered model's own: a path, a (path, scale) pair, or a
    list of either (scale 1 by default). `speculative`: draft tokens by prompt lookup and verify
    them several per backend call (True: the default SpeculativeConfig, which drafts only where the
    verification cost measured on this machine is paid back); the output is unchanged where the
    backend's multi-token logits equal its one-token logits (engine/speculative.py).
    """
    if not isinstance(speculative, bool | SpeculativeConfig):
        raise HallmarkError(f"speculative must be True, False or a SpeculativeConfig, not {speculative!r}")
    request_policy = policy if isinstance(policy, Policy) else load_policy(policy)  # bad files fail fast
    target = name_or_path if name_or_path is not None else os.environ.get("HALLMARK_MODEL", DEFAULT_MODEL)
    resolved = resolve(target, show_progress=show_progress)
    explicit = lora_list(lora)
    # Missing, unreadable or non-adapter files fail before the model loads.
    adapters = [(read_adapter_info(p), 1.0) for p in resolved.adapters]
    adapters += [(read_adapter_info(p), scale) for p, scale in explicit]
    if resolved.adapters:  # a registered LoRA: the backend holds its base model
        base_name = resolved.entry.name if resolved.entry is not None else resolved.path.stem
    else:
        base_name = resolved.name
    config = BackendConfig(
        n_ctx=n_ctx,
        max_sequences=max_sequences,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        flash_attn=flash_attn,
    )
    t0 = time.perf_counter()
    backend = open_backend(resolved.path, config)
    try:
        model = Model(
            backend,
            resolved.name,
            path=resolved.path,
            entry=resolved.entry,
            load_seconds=time.perf_counter() - t0,
            watermark=watermark,
            watermark_key=watermark_key,
            disclosure=disclosure_of(request_policy),
            policy=request_policy,
            base_name=base_name,
            registry=resolved.registry,
        )
        model._attach_adapters(adapters)
    except BaseException:
        backend.close()
        raise
    # The name says what runs: a registered name already does for its own adapter.
    model.name = adapter_model_name(resolved.name, model.adapters[len(resolved.adapters) :])
    model.load_seconds = time.perf_counter() - t0
    if speculative:
        model.speculative = speculative if isinstance(speculative, SpeculativeConfig) else SpeculativeConfig()
    return model


def disclosure_of(policy: Policy) -> Disclosure:
    """The chat disclosure a policy asks for; hallmark's default when the policy is off (turning
    screening off does not let a chat pass as human: a policy file must say so)."""
    if policy.config is None:
        return DEFAULT_DISCLOSURE
    instruction = policy.disclosure_instruction
    if instruction is None:
        instruction = DEFAULT_DISCLOSURE.instruction
    return Disclosure(instruction=instruction or None, rail=policy.human_claim_rail)
