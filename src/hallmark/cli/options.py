"""Option builders shared by the command modules: model, sampling and dataclass-derived flags.

Every option can also come from an environment variable HALLMARK_<NAME> (`envvar`); a flag on the
command line wins over the variable, and `--help` lists each variable.

`dataclass_options(cls)` turns the fields of a config dataclass declared with
`hallmark.settings.setting(...)` into click options (flag, env var, type, range, choices, default
and help all from the field), and `config_from_options(cls, options)` builds the dataclass back
from the parsed values; so a default such as `hallmark serve --port`'s is written once, in the
dataclass. This module imports no other `hallmark.cli` module, and no model code (llama.cpp is
imported by `load_model` when a command runs): every command module imports it for `--help` too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

import click

from hallmark.catalog import DEFAULT_MODEL
from hallmark.engine.sampling import SamplingParams
from hallmark.settings import env_name, flag_name
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def envvar(name: str) -> str:
    """The environment variable for an option: 'ctx_size' or 'ctx-size' -> 'HALLMARK_CTX_SIZE'."""
    return "HALLMARK_" + name.upper().replace("-", "_")


def _apply(f: F, options: Iterable[Callable[[F], F]]) -> F:
    """Decorate `f` with `options` so that they appear in `--help` in the order given."""
    for option in reversed(list(options)):
        f = option(f)
    return f


# -- dataclass fields -> options -------------------------------------------------------------------
_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _scalar_type(f: Field[Any]) -> type:
    """The field's value type from its annotation ('int | None' -> int; 'tuple[str, ...]' -> str).

    The annotations are usually strings (`from __future__ import annotations`), so they are read as
    text; a class (`int`) or a typing form (`int | None`) is turned into the same text first.
    """
    if isinstance(f.type, str):
        annotation = f.type
    else:
        annotation = f.type.__name__ if isinstance(f.type, type) else str(f.type)
    parts = [p.strip() for p in annotation.split("|") if p.strip() != "None"]
    if len(parts) == 1 and parts[0] in _SCALARS:
        return _SCALARS[parts[0]]
    if f.metadata.get("multiple") and len(parts) == 1 and parts[0].replace(" ", "") == "tuple[str,...]":
        return str
    raise TypeError(f"cannot make an option of field {f.name!r} with type {annotation!r}")


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _param_name(f: Field[Any]) -> str:
    """The click parameter (keyword argument) that carries a field's value.

    A negated field's option is a plain `--no-...` flag whose value is the opposite of the field's,
    so it gets the flag's own name ('--no-prefix-cache' -> 'no_prefix_cache'), never the field's.
    """
    if f.metadata.get("negated"):
        return flag_name(f).lstrip("-").replace("-", "_")
    return f.name


def _dataclass_option(f: Field[Any]) -> Callable[[F], F]:
    meta = f.metadata
    if "help" not in meta:
        raise TypeError(f"field {f.name!r} is not declared with hallmark.settings.setting(); exclude it")
    kind = _scalar_type(f)
    default = _default(f)
    common: dict[str, Any] = {"envvar": env_name(f), "show_envvar": True, "help": meta["help"]}
    if meta.get("metavar"):
        common["metavar"] = meta["metavar"]
    if meta.get("negated"):
        # `--no-prefix-cache` (or HALLMARK_NO_PREFIX_CACHE=1) sets prefix_cache=False. A plain flag,
        # inverted in config_from_options: click's flag_value=False would read the variable's "1"
        # as True, i.e. the opposite of what it says.
        if kind is not bool or default is not True:
            raise TypeError(f"negated field {f.name!r} must be a bool that defaults to True")
        return click.option(flag_name(f), _param_name(f), is_flag=True, default=False, **common)
    if kind is bool:
        # A switch that is off by default is a plain flag (`--metrics`); one that is on gets its
        # `--no-...` half too, or the command line could not turn it off.
        decl = flag_name(f) if not default else f"{flag_name(f)}/--no-{flag_name(f)[2:]}"
        return click.option(decl, f.name, is_flag=True, default=bool(default), show_default=True, **common)
    if meta.get("multiple"):
        return click.option(flag_name(f), f.name, multiple=True, default=default, **common)
    param_type: Any = kind
    if meta.get("choices"):
        param_type = click.Choice(meta["choices"])
    elif meta.get("min") is not None or meta.get("max") is not None:
        if kind not in (int, float):
            raise TypeError(f"field {f.name!r} has a range but is not a number")
        ranged = click.IntRange if kind is int else click.FloatRange
        param_type = ranged(min=meta.get("min"), max=meta.get("max"))
    return click.option(
        flag_name(f), f.name, type=param_type, default=default, show_default=default is not None, **common
    )


def dataclass_options(cls: type, exclude: Iterable[str] = ()) -> Callable[[F], F]:
    """A decorator adding one option per field of the dataclass `cls` (but those in `exclude`).

    Each field must be declared with `hallmark.settings.setting(...)`: its metadata gives the flag,
    env var, help, range (click.IntRange/FloatRange), choices (click.Choice), metavar, `multiple`
    (a repeatable option giving a tuple) and `negated` (a bool field that a `--no-...` flag sets to
    False). The annotation gives the type, the field's default the option's default.
    """
    skip = set(exclude)
    options = [_dataclass_option(f) for f in fields(cls) if f.name not in skip]

    def decorate(f: F) -> F:
        return _apply(f, options)

    return decorate


def config_from_options(cls: type[T], options: dict[str, Any]) -> T:
    """Build `cls` from parsed options made by `dataclass_options(cls)` (popped from `options`).

    `options` may also hold values for excluded fields under the field's name (e.g. `models`);
    fields with no value keep their dataclass default.
    """
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass
        param = _param_name(f)
        if param not in options:
            continue
        value = options.pop(param)
        if f.metadata.get("negated"):
            value = not value
        elif f.metadata.get("multiple"):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


# -- options shared by every command that loads a model --------------------------------------------
def model_options(f: F) -> F:
    """-m/--model, --lora, --ctx-size, --threads, --gpu-layers and the watermark scheme and key."""
    return _apply(
        f,
        [
            click.option(
                "-m",
                "--model",
                default=DEFAULT_MODEL,
                envvar=envvar("model"),
                show_default=True,
                show_envvar=True,
                help="Catalog name, registered fine-tuned model (`hallmark models`) or path to a .gguf file.",
            ),
            click.option(
                "--lora",
                multiple=True,
                metavar="PATH[:SCALE]",
                envvar=envvar("lora"),
                show_envvar=True,
                help="Run with this LoRA adapter GGUF for the model, at SCALE (default 1); repeatable "
                "(the variable takes several, separated by spaces).",
            ),
            click.option(
                "--ctx-size",
                type=click.IntRange(min=8),
                default=None,
                envvar=envvar("ctx_size"),
                show_envvar=True,
                help="Context window in tokens [default: model's, at most 8192].",
            ),
            click.option(
                "--threads",
                type=click.IntRange(min=1),
                default=None,
                envvar=envvar("threads"),
                show_envvar=True,
                help="CPU threads [default: all available].",
            ),
            click.option(
                "--gpu-layers",
                type=int,
                default=0,
                envvar=envvar("gpu_layers"),
                show_default=True,
                show_envvar=True,
                help="Layers to offload to a GPU (needs a GPU build of llama.cpp); -1 = all.",
            ),
            click.option(
                "--watermark-scheme",
                type=click.Choice(SCHEMES),
                default=DEFAULT_SCHEME,
                show_default=True,
                envvar=envvar("watermark_scheme"),
                show_envvar=True,
                help="Scheme that watermarks sampled output (see `hallmark detect`).",
            ),
            click.option(
                "--watermark-key",
                default=None,
                metavar="NAME_OR_ID",
                # Not HALLMARK_WATERMARK_KEY: that variable holds a secret key itself.
                envvar=envvar("watermark_key_name"),
                show_envvar=True,
                help="Stored key to watermark with "
                "[default: $HALLMARK_WATERMARK_KEY, else your default key].",
            ),
        ],
    )


def policy_option(f: F) -> F:
    """--policy, for the commands that take requests from a person (generate, chat)."""
    return click.option(
        "--policy",
        default=None,
        metavar="FILE",
        envvar=envvar("policy"),
        show_envvar=True,
        help="Request policy: a YAML file, 'default' or 'off' [default: the shipped policy]; "
        "see `hallmark policy show`.",
    )(f)


def load_model(options: dict[str, Any], default_ctx: int | None = None, max_sequences: int = 1) -> Any:
    """Load the model named by the model options (which are removed from `options`). Commands
    without --policy load with the policy off: their prompts are task inputs, not requests."""
    from hallmark.model import load, parse_lora_arg  # here, so that `--help` does not load llama.cpp

    return load(
        options.pop("model"),
        lora=[parse_lora_arg(item) for item in options.pop("lora", ())],
        n_ctx=options.pop("ctx_size") or default_ctx,
        max_sequences=max_sequences,
        n_threads=options.pop("threads"),
        n_gpu_layers=options.pop("gpu_layers"),
        watermark=options.pop("watermark_scheme"),
        watermark_key=options.pop("watermark_key"),
        policy=options.pop("policy", "off"),
    )


# -- sampling ---------------------------------------------------------------------------------------
def _parse_logit_bias(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[int, float] | None:
    if not values:
        return None
    out: dict[int, float] = {}
    for item in values:
        token, sep, bias = item.partition("=")
        try:
            out[int(token)] = float(bias)
        except ValueError:
            raise click.BadParameter(f"expected TOKEN_ID=BIAS, got {item!r}") from None
        if not sep:
            raise click.BadParameter(f"expected TOKEN_ID=BIAS, got {item!r}")
    return out


# CLI-specific wording where a flag's type differs from the API's.
_HELP_OVERRIDES = {"max_tokens": "Most tokens to generate; 0 = until the context is full."}


def _sampling_option(fld: Field[Any]) -> Callable[[F], F]:
    name = fld.name
    flag = flag_name(fld)
    help_text = _HELP_OVERRIDES.get(name, fld.metadata.get("help", ""))
    default = _default(fld)
    # The options default to None (not given: SamplingParams keeps its own default, and validates
    # what is given with its own messages), so the default is shown in the help text by hand.
    if default not in (None, (), False):
        help_text += f"  [default: {default}]"
    common: dict[str, Any] = {"envvar": env_name(fld), "show_envvar": True, "help": help_text}
    if name == "stop":
        return click.option(flag, multiple=True, metavar="TEXT", **common)
    if name == "logit_bias":
        return click.option(
            flag, multiple=True, metavar="TOKEN_ID=BIAS", callback=_parse_logit_bias, **common
        )
    kind = _scalar_type(fld)
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", default=None, **common)
    return click.option(flag, type=kind, default=None, **common)


def sampling_options(f: F) -> F:
    """One flag per SamplingParams field, with the field's help text and default."""
    return _apply(f, [_sampling_option(fld) for fld in fields(SamplingParams)])


def sampling_params_from(options: dict[str, Any]) -> SamplingParams:
    """SamplingParams from the sampling flags that were given (popped from `options`)."""
    overrides: dict[str, Any] = {}
    for fld in fields(SamplingParams):
        value = options.pop(fld.name, None)
        if value is None or value == ():
            continue
        if fld.name == "max_tokens" and value == 0:
            value = None  # the flag's 0 is the API's None: until the context is full
        overrides[fld.name] = value
    return SamplingParams().with_overrides(**overrides)


# -- structured output -------------------------------------------------------------------------------
def output_format_options(f: F) -> F:
    """--json-schema FILE, --json-object and --grammar FILE: what the output must be."""
    return _apply(
        f,
        [
            click.option(
                "--json-schema",
                "json_schema_file",
                type=click.Path(dir_okay=False),
                default=None,
                envvar=envvar("json_schema"),
                show_envvar=True,
                help="Constrain the output to JSON valid under the JSON schema in this file.",
            ),
            click.option(
                "--json-object",
                is_flag=True,
                default=False,
                envvar=envvar("json_object"),
                show_envvar=True,
                help="Constrain the output to a JSON object (JSON mode).",
            ),
            click.option(
                "--grammar",
                "grammar_file",
                type=click.Path(dir_okay=False),
                default=None,
                envvar=envvar("grammar"),
                show_envvar=True,
                help="Constrain the output to a grammar: a GBNF file (llama.cpp's, .gbnf) or a Lark "
                "file (llguidance's dialect, .lark); other names are read as GBNF when they use '::='.",
            ),
        ],
    )


def grammar_from(options: dict[str, Any]) -> Any:
    """The Grammar the output-format flags ask for (popped from `options`), or None."""
    from hallmark.engine.grammar import Grammar  # llguidance loads only when a command runs

    schema_file = options.pop("json_schema_file", None)
    json_object = options.pop("json_object", False)
    grammar_file = options.pop("grammar_file", None)
    given = [
        name
        for name, v in (
            ("--json-schema", schema_file),
            ("--json-object", json_object),
            ("--grammar", grammar_file),
        )
        if v
    ]
    if len(given) > 1:
        raise click.UsageError(f"give one of {', '.join(given)}, not several")
    if json_object:
        return Grammar.json_object()
    if schema_file:
        return Grammar.json_schema(_read_text(schema_file, "JSON schema"), param="--json-schema")
    if grammar_file:
        suffix = grammar_file.rsplit(".", 1)[-1].lower() if "." in grammar_file else ""
        kind = suffix if suffix in ("gbnf", "lark") else None
        return Grammar.from_grammar(_read_text(grammar_file, "grammar"), kind, param="--grammar")
    return None


def _read_text(path: str, what: str) -> str:
    from hallmark.errors import HallmarkError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise HallmarkError(f"cannot read the {what} file {path}: {reason}") from e
