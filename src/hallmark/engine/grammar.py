"""Constrained decoding: an output grammar applied as a token mask in the sampler.

A `Grammar` is what a request asks its output to be: JSON matching a schema, any JSON object, or
text of a Lark or GBNF grammar. It is compiled by llguidance (the engine llama.cpp and vLLM use)
when it is made, so a bad schema or grammar is an error (GrammarError, a 400) before any token is
generated. A `GrammarState` follows one generation: before each token it gives the mask of tokens
that can continue a valid output (the sampler masks them before temperature, the filters and the
watermark's choice), after each token it advances, and it says when the grammar is complete.

Why llguidance and not xgrammar (bench/experiments/grammar_engines.py, docs/structured.md): both
compute a mask in microseconds against 10-20 ms per decoded token here, but xgrammar requires
torch, transformers and triton at install, which a CPU inference install must not pull in, and
compiles a schema 10-40x slower; llguidance is one small wheel that reads JSON schema, Lark and
GBNF.

The llguidance view of a tokenizer takes a second to build for a 262k vocabulary, so it is built
once per tokenizer (by its fingerprint) on first use and kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llguidance
import numpy as np
from llguidance.gbnf_to_lark import any_to_lark

from hallmark.backends.base import Tokenizer
from hallmark.engine.sampler import TokenMask
from hallmark.errors import GrammarError

# JSON is written compactly, with the separators json.dumps uses: a small model given free
# whitespace can indent forever, and the fixed form costs the fewest tokens.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Bounds on what a request may ask llguidance to build (a schema or grammar is untrusted input).
MAX_GRAMMAR_CHARS = 256 * 1024
LIMITS = dict(max_grammar_size=200_000, max_lexer_states=100_000, step_lexer_fuel=200_000)


@dataclass(frozen=True)
class Grammar:
    """A constraint on a generation's output. Build with the class methods; they validate.

    `kind`: json_schema, json_object, lark or gbnf. `source`: the schema (JSON text) or grammar as
    given. `definition`: llguidance's compiled grammar text. `parse`: turns a complete output into
    the value it describes (a dict, a pydantic model) or None for plain grammars.
    """

    kind: str
    source: str
    definition: str = field(repr=False)
    parse: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)
    # The output may be free prose (tool calling's `auto` answer): the human-claim rail still acts
    # on it. Otherwise the output is data, which the rail's rewriting would make invalid.
    prose: bool = False

    @classmethod
    def json_schema(cls, schema: Any, param: str = "response_format") -> Grammar:
        """Output is JSON valid under `schema` (a dict, its JSON text, or a pydantic model class)."""
        model = _pydantic_model(schema)
        if model is not None:
            parse: Callable[[str], Any] = model.model_validate_json
            schema = model.model_json_schema()
        else:
            parse = json.loads
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GrammarError(f"the JSON schema is not valid JSON: {e}", param) from None
        if not isinstance(schema, dict):
            raise GrammarError(f"a JSON schema must be a JSON object, got {type(schema).__name__}", param)
        text = json.dumps(schema, ensure_ascii=False)
        _check_size(text, param)
        schema = closed_objects(schema)
        definition = _compile(
            lambda: llguidance.LLMatcher.grammar_from_json_schema(schema, JSON_OPTIONS), param
        )
        return cls("json_schema", text, _validated(definition, "JSON schema", param), parse)

    @classmethod
    def json_object(cls) -> Grammar:
        """Output is any JSON object (OpenAI's JSON mode)."""
        schema = {"type": "object"}
        definition = llguidance.LLMatcher.grammar_from_json_schema(schema, JSON_OPTIONS)
        return cls("json_object", json.dumps(schema), definition, json.loads)

    @classmethod
    def from_grammar(cls, text: str, kind: str | None = None, param: str = "grammar") -> Grammar:
        """Output is text of a Lark grammar (llguidance's dialect) or a GBNF grammar (llama.cpp's).

        `kind` "lark" or "gbnf"; by default GBNF when the text has GBNF's `::=` rules, else Lark."""
        if not isinstance(text, str) or not text.strip():
            raise GrammarError("the grammar is empty", param)
        _check_size(text, param)
        kind = kind or ("gbnf" if "::=" in text else "lark")
        if kind not in ("lark", "gbnf"):
            raise GrammarError(f"unknown grammar kind {kind!r}: use lark or gbnf", param)
        if kind == "gbnf":
            try:
                lark = any_to_lark(text)
            except Exception as e:  # the converter raises plain exceptions with a position
                raise GrammarError(f"the GBNF grammar does not parse: {e}", param) from None
        else:
            lark = text
        definition = _compile(lambda: llguidance.LLMatcher.grammar_from_lark(lark), param)
        return cls(kind, text, _validated(definition, f"{kind.upper()} grammar", param))


def response_format_grammar(response_format: Any, param: str = "response_format") -> Grammar | None:
    """The Grammar for a Python API `response_format`: a JSON schema dict, a pydantic model class,
    a Grammar, or OpenAI's form ({"type": "json_object"}, {"type": "json_schema", "json_schema":
    {"schema": ...}}, {"type": "text"}). None for no constraint."""
    if response_format is None or isinstance(response_format, Grammar):
        return response_format
    if isinstance(response_format, dict) and response_format.get("type") in (
        "text",
        "json_object",
        "json_schema",
    ):
        kind = response_format["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            return Grammar.json_object()
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise GrammarError("a json_schema response_format needs json_schema.schema", param)
        return Grammar.json_schema(spec["schema"], param)
    return Grammar.json_schema(response_format, param)


class GrammarState:
    """One generation's progress through its grammar."""

    def __init__(self, grammar: Grammar, tokenizer: Tokenizer):
        self.grammar = grammar
        self.n_vocab = tokenizer.n_vocab  # type: ignore[attr-defined]
        self.matcher = llguidance.LLMatcher(
            grammar_tokenizer(tokenizer),
            grammar.definition,
            log_level=0,
            limits=llguidance.LLParserLimits(**LIMITS),
        )
        self._check()
        self._bits = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)

    def allowed(self) -> TokenMask:
        """The tokens that can come next (end-of-generation tokens where the grammar may end)."""
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        self._check()
        return TokenMask(self._bits, self.n_vocab)

    def advance(self, token: int) -> None:
        """Take the sampled token (one of `allowed()`)."""
        self.matcher.consume_token(token)
        self._check()

    @property
    def complete(self) -> bool:
        """Nothing but the end can follow: generation stops here."""
        return self.matcher.is_stopped()

    def _check(self) -> None:
        if self.matcher.is_error():
            raise GrammarError(f"constrained decoding failed: {self.matcher.get_error()}", None)


def closed_objects(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever an object lists its properties and
    says nothing about others (as xgrammar's strict mode and Outlines do; OpenAI's strict mode
    requires it to be written). JSON Schema allows extra keys by default, and a small model given
    that freedom invents keys until max_tokens; every output is still valid under the original."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_objects(s) for name, s in out[key].items()}
    for key in _SUBSCHEMAS:
        if key in out:
            out[key] = closed_objects(out[key])
    open_keys = ("additionalProperties", "patternProperties", "unevaluatedProperties")
    if isinstance(out.get("properties"), dict) and not any(k in out for k in open_keys):
        out["additionalProperties"] = False
    return out


# Keywords whose value is a map of names to subschemas, and those holding a subschema or a list.
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUBSCHEMAS = (
    "items",
    "prefixItems",
    "additionalItems",
    "contains",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "additionalProperties",
    "propertyNames",
)


# -- llguidance's view of a tokenizer -------------------------------------------------------------
_tokenizers: dict[str, llguidance.LLTokenizer] = {}
_tokenizers_lock = threading.Lock()


def grammar_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for a hallmark tokenizer, built once per tokenizer fingerprint.

    Control tokens are marked special (a grammar's text never matches them); every
    end-of-generation token ends a grammar (Gemma's chat turns end with <end_of_turn>, not <eos>)."""
    key = tokenizer.fingerprint()
    with _tokenizers_lock:
        cached = _tokenizers.get(key)
        if cached is None:
            wrapper = _Wrapper(tokenizer)
            cached = llguidance.LLTokenizer(wrapper, eos_token=wrapper.eos_token_ids)
            _tokenizers[key] = cached
        return cached


class _Wrapper(llguidance.TokenizerWrapper):
    def __init__(self, tokenizer: Tokenizer):
        n = tokenizer.n_vocab  # type: ignore[attr-defined]
        self.special_token_ids = [t for t in range(n) if tokenizer.is_special(t)]
        eog = [t for t in self.special_token_ids if tokenizer.is_eog(t)] or [tokenizer.eos_token]
        if tokenizer.eos_token in eog:  # llguidance's own EOS first
            eog.remove(tokenizer.eos_token)
            eog.insert(0, tokenizer.eos_token)
        self.eos_token_id = eog[0]
        self.eos_token_ids = eog
        self.bos_token_id = tokenizer.bos_token
        special = set(self.special_token_ids)
        self.tokens = [b"" if t in special else tokenizer.token_bytes(t) for t in range(n)]
        self.is_tokenizer_wrapper = True
        self._tokenizer = tokenizer
        self._accepts_bytes = False

    def __call__(self, s: str) -> list[int]:
        return self._tokenizer.tokenize(s, add_special=False, parse_special=False)


# -- helpers --------------------------------------------------------------------------------------
def _pydantic_model(obj: Any) -> Any:
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic is a core dependency
        return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseModel) else None


def _check_size(text: str, param: str) -> None:
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(
            f"the grammar or schema is {len(text)} characters; at most {MAX_GRAMMAR_CHARS} are accepted",
            param,
        )


def _compile(build: Callable[[], str], param: str) -> str:
    try:
        return build()
    except (ValueError, TypeError) as e:
        raise GrammarError(f"invalid or unsupported grammar: {e}", param) from None


def _validated(definition: str, what: str, param: str) -> str:
    problem = llguidance.LLMatcher.validate_grammar(
        definition, None, limits=llguidance.LLParserLimits(**LIMITS)
    )
    if problem:
        raise GrammarError(f"invalid or unsupported {what}: {problem.strip()}", param)
    return definition
