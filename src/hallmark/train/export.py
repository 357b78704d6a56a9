"""PyTorch training results written as GGUF files that llama.cpp runs, with gguf-py only.

Three products, each written atomically (a temporary file in the target's folder, then
`os.replace`), so a reader never sees half a file:

- `write_lora_adapter`: a peft LoRA as a llama.cpp adapter GGUF, loaded on top of its base model
  (`general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`; tensors
  `<base tensor>.weight.lora_a` / `.lora_b`). llama.cpp applies it as W x + (alpha / rank) B A x,
  peft's own scaling, with rank read from lora_a's shape.
- `write_merged_model`: a base GGUF with the adapter added into its weights (W + alpha / rank * B A),
  every key/value of the base copied, then quantised by llama.cpp.
- `write_full_model`: a transformers `LlamaForCausalLM` or `Gemma3ForCausalLM` (a model trained
  from scratch) as a GGUF, with the tokenizer of a shipped GGUF of the same vocabulary.

The conversions follow llama.cpp's own converter (convert_hf_to_gguf.py): its tensor names, its
row permutation of the llama attention query and key weights, gemma's norms stored as weight + 1.
Quantisation is llama.cpp's (`hallmark.backends.quantize_gguf`), so K-quant fallbacks for row
widths that are not multiples of 256 are llama.cpp's decisions, the same as llama-quantize's.

Tensors cross this module in numpy's order: a weight of ggml shape [n_in, n_out] is an array of
shape (n_out, n_in), the same as the PyTorch `nn.Linear.weight` it came from.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from hallmark.progress import progress_bar

LoraWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""HF module name (without ".weight") -> (A [rank, in_features], B [out_features, rank])."""

ARCHITECTURES = ("llama", "gemma3")
QUANT_TYPES = ("f16", "q8_0", "q4_k_m")

# llama.cpp's tensor names (gguf-py's TensorNameMap) for the modules of one transformer block.
_BLOCK_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
}
# The one name that differs: llama's post_attention_layernorm is the norm *before* the feed-forward
# block (ffn_norm); gemma3 has four norms per block and this one follows the attention.
_BLOCK_NAMES_BY_ARCH = {
    "llama": {"post_attention_layernorm": "ffn_norm"},
    "gemma3": {
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    },
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)")

# ggml file types (llama_ftype) of the unquantised files written here.
_FTYPE_MOSTLY_F16 = 1


def gguf_tensor_name(hf_module: str, arch: str = "llama") -> str:
    """'model.layers.3.self_attn.q_proj' -> 'blk.3.attn_q': llama.cpp's name of a transformers module.

    `arch` matters for the norms only ("llama" or "gemma3"). Raises ValueError naming the module if
    llama.cpp has no tensor for it.
    """
    if arch not in _BLOCK_NAMES_BY_ARCH:
        raise ValueError(f"unsupported architecture {arch!r} (supported: {', '.join(ARCHITECTURES)})")
    if hf_module in _TOP_NAMES:
        return _TOP_NAMES[hf_module]
    match = _BLOCK.fullmatch(hf_module)
    if match:
        layer, rest = match.groups()
        name = _BLOCK_NAMES.get(rest) or _BLOCK_NAMES_BY_ARCH[arch].get(rest)
        if name:
            return f"blk.{layer}.{name}"
    raise ValueError(f"no llama.cpp tensor for the module {hf_module!r} ({arch})")


# -- peft -------------------------------------------------------------------------------------


def lora_weights(peft_model: torch.nn.Module) -> tuple[LoraWeights, float, int]:
    """(weights, alpha, rank) of a peft LoRA model's "default" adapter (DDP unwrapped if given).

    The tensors are float32 copies on the CPU. `alpha` is such that alpha / rank equals peft's
    scaling of every module (for rsLoRA that is lora_alpha * sqrt(rank)), because llama.cpp scales
    an adapter by alpha / rank. Adapters that a llama.cpp LoRA cannot hold (DoRA, LoRA biases,
    embedding LoRA, modules_to_save, a different rank or scaling per module) raise ValueError.
    """
    if isinstance(peft_model, torch.nn.parallel.DistributedDataParallel):
        peft_model = peft_model.module
    weights: LoraWeights = {}
    scalings: set[float] = set()
    ranks: set[int] = set()
    for name, module in peft_model.named_modules():
        if "default" in (getattr(module, "modules_to_save", None) or {}):
            raise ValueError(f"{name}: a fully trained module (modules_to_save) is not in a LoRA adapter")
        if "default" in (getattr(module, "lora_embedding_A", None) or {}):
            raise ValueError(f"{name}: LoRA on an embedding cannot be exported (target linear layers only)")
        if "default" not in (getattr(module, "lora_A", None) or {}):
            continue
        if getattr(module, "use_dora", {}).get("default", False):
            raise ValueError(f"{name}: DoRA adapters cannot be exported to llama.cpp (use plain LoRA)")
        a, b = module.lora_A["default"], module.lora_B["default"]
        if getattr(b, "bias", None) is not None:
            raise ValueError(f"{name}: LoRA biases cannot be exported to llama.cpp")
        key = name.removeprefix("base_model.model.")
        weights[key] = (a.weight.detach().float().cpu().clone(), b.weight.detach().float().cpu().clone())
        scalings.add(float(module.scaling["default"]))
        ranks.add(int(a.weight.shape[0]))
    if not weights:
        raise ValueError("the model has no LoRA adapter named 'default'")
    if len(ranks) != 1 or len(scalings) != 1:
        # One alpha and one rank per file: a rank_pattern / alpha_pattern cannot be written.
        raise ValueError(f"every LoRA module must have the same rank and scaling (ranks {sorted(ranks)})")
    (rank,) = ranks
    (scaling,) = scalings
    return weights, scaling * rank, rank


# -- reading GGUF ---------------------------------------------------------------------------

_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "<B",
    gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I",
    gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f",
    gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class _Value:
    """A GGUF key's value as GGUFWriter.add_key_value takes it."""

    type: gguf.GGUFValueType
    value: Any
    sub_type: gguf.GGUFValueType | None = None


@dataclass(frozen=True)
class _StoredTensor:
    name: str
    type: gguf.GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order
    offset: int  # from the start of the file


class _GGUFFile:
    """A little-endian GGUF file's keys/values and tensor table, its tensor data memory-mapped.

    Not gguf.GGUFReader: that one makes numpy views per array element and takes 10 s for
    gemma-3's 262,144-token vocabulary (2.5 s for SmolLM2's) on this project's 2-core machines;
    struct over the mapped file reads the same header in a fraction of a second. Use as a context
    manager, so that the map is closed.
    """

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, ValueError, UnicodeDecodeError) as e:
            self.close()
            raise ValueError(f"{path}: not a readable GGUF file ({e})") from e

    def _parse(self) -> None:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", self._map, 0)
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"magic {magic!r}, version {version}")
        self._offset = 24
        self.fields: dict[str, _Value] = {}
        for _ in range(n_kv):
            key = self._string()
            self.fields[key] = self._value(gguf.GGUFValueType(self._unpack("<I")))
        self.tensors: list[_StoredTensor] = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = struct.unpack_from("<I", self._map, self._offset)
            dims = struct.unpack_from(f"<{n_dims}Q", self._map, self._offset + 4)
            self._offset += 4 + 8 * n_dims
            qtype = gguf.GGMLQuantizationType(self._unpack("<I"))
            self.tensors.append(_StoredTensor(name, qtype, tuple(reversed(dims)), self._unpack("<Q")))
        alignment = self.get(gguf.Keys.General.ALIGNMENT) or gguf.GGUF_DEFAULT_ALIGNMENT
        data_start = -(-self._offset // alignment) * alignment
        self.tensors = [_StoredTensor(t.name, t.type, t.shape, data_start + t.offset) for t in self.tensors]

    def _unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self._map, self._offset)
        self._offset += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        self._offset += n
        return self._map[self._offset - n : self._offset].decode("utf-8")

    def _value(self, vtype: gguf.GGUFValueType) -> _Value:
        if vtype == gguf.GGUFValueType.STRING:
            return _Value(vtype, self._string())
        if vtype in _SCALAR_FORMATS:
            return _Value(vtype, self._unpack(_SCALAR_FORMATS[vtype]))
        if vtype != gguf.GGUFValueType.ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        item_type = gguf.GGUFValueType(self._unpack("<I"))
        count = self._unpack("<Q")
        if item_type == gguf.GGUFValueType.STRING:
            return _Value(vtype, [self._string() for _ in range(count)], item_type)
        if item_type not in _SCALAR_FORMATS:
            raise ValueError(f"arrays of {item_type.name} are not supported")
        fmt = _SCALAR_FORMATS[item_type]
        items = list(struct.unpack_from(f"<{count}{fmt[1]}", self._map, self._offset))
        self._offset += count * struct.calcsize(fmt)
        return _Value(vtype, items, item_type)

    def get(self, key: str) -> Any:
        value = self.fields.get(key)
        return None if value is None else value.value

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: t.shape for t in self.tensors}

    def dequantized(self, tensor: _StoredTensor) -> np.ndarray:
        """A tensor's values as float32, in numpy order."""
        byte_shape = gguf.quants.quant_shape_to_byte_shape(tensor.shape, tensor.type)
        raw = np.frombuffer(self._map, np.uint8, int(np.prod(byte_shape)), tensor.offset).reshape(byte_shape)
        values = gguf.quants.dequantize(raw, tensor.type)
        # F32 comes back as a view of the map, which close() unmaps: that one is copied.
        return values.copy() if tensor.type == gguf.GGMLQuantizationType.F32 else values.astype(np.float32)

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> _GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- llama.cpp's layout -----------------------------------------------------------------------


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the output rows of a query or key weight.

    transformers' llama rotates the two halves of each head (rotate_half); llama.cpp's rope
    rotates adjacent pairs. Interleaving each head's halves makes the two agree. The permutation acts
    on rows only, so it applies as well to a LoRA B (out_features x rank) or a bias.
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class _Layout:
    """What llama.cpp's layout of a model's weights depends on."""

    arch: str
    n_head: int
    n_head_kv: int

    def to_gguf(self, gguf_name: str, rows: np.ndarray) -> np.ndarray:
        """`rows` (a weight, bias, delta or LoRA B of the tensor `gguf_name`) in llama.cpp's row order."""
        if self.arch != "llama":  # gemma3's converter permutes nothing
            return rows
        if gguf_name.endswith(".attn_q"):
            return _permute_rows(rows, self.n_head)
        if gguf_name.endswith(".attn_k"):
            return _permute_rows(rows, self.n_head_kv)
        return rows


def _base_layout(base: _GGUFFile) -> _Layout:
    arch = base.get(gguf.Keys.General.ARCHITECTURE)
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{base.path}: architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    n_head = base.get(f"{arch}.attention.head_count")
    n_head_kv = base.get(f"{arch}.attention.head_count_kv") or n_head
    if not isinstance(n_head, int) or not isinstance(n_head_kv, int):
        raise ValueError(f"{base.path}: the head counts are missing or vary per layer")
    return _Layout(arch, n_head, n_head_kv)


def _deltas(
    lora: LoraWeights, layout: _Layout, shapes: dict[str, tuple[int, ...]], base: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The adapter keyed by the base's tensor names, B in llama.cpp's row order, shapes checked."""
    out = {}
    for module, (a, b) in lora.items():
        name = gguf_tensor_name(module, layout.arch)
        a_np, b_np = a.detach().float().cpu().numpy(), b.detach().float().cpu().numpy()
        target = shapes.get(f"{name}.weight")
        if target is None:
            # e.g. lm_head of a model with tied embeddings: llama.cpp has no 'output' tensor then.
            raise ValueError(f"{module}: the base model {base} has no tensor {name}.weight")
        if a_np.shape[0] != b_np.shape[1] or target != (b_np.shape[0], a_np.shape[1]):
            raise ValueError(
                f"{module}: LoRA A {tuple(a_np.shape)} and B {tuple(b_np.shape)} do not fit "
                f"{name}.weight {target} of {base}"
            )
        out[name] = (a_np, layout.to_gguf(name, b_np))
    return out


# -- writing ----------------------------------------------------------------------------------


@contextmanager
def _temporary(folder: Path, name: str) -> Iterator[Path]:
    """A fresh path in `folder` (the target's, so os.replace is a rename), removed on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    path = Path(tmp)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """Write to the yielded path; it becomes `out` only if the block finishes."""
    with _temporary(out.parent, out.name) as tmp:
        yield tmp
        os.replace(tmp, out)


@dataclass(frozen=True)
class _Tensor:
    """A tensor to stream into a GGUF: its data is produced only when it is written."""

    name: str
    shape: tuple[int, ...]  # numpy order
    dtype: type[np.floating]  # np.float16 or np.float32
    load: Callable[[], np.ndarray]


def _storage_type(shape: tuple[int, ...]) -> type[np.floating]:
    # As the converter does: norms and other 1-D tensors stay F32 (llama.cpp wants them so),
    # matrices are F16 (quantised afterwards, or kept as the "f16" product).
    return np.float32 if len(shape) == 1 else np.float16


def _write_gguf(
    path: Path,
    arch: str,
    add_kvs: Callable[[gguf.GGUFWriter], None],
    tensors: list[_Tensor],
    progress: str | None = None,
) -> None:
    """A GGUF streamed tensor by tensor, so that only one dequantised tensor is in memory at a time.

    `progress`: the description of a progress bar, or None for none.
    """
    writer = gguf.GGUFWriter(path, arch)
    add_kvs(writer)
    for t in tensors:
        nbytes = int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
        writer.add_tensor_info(t.name, t.shape, np.dtype(t.dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with progress_bar(len(tensors), progress or "", enabled=progress is not None, unit="tensor") as bar:
        for t in tensors:
            data = np.ascontiguousarray(t.load(), dtype=t.dtype)
            if data.shape != t.shape:
                raise AssertionError(f"{t.name}: {data.shape} != {t.shape}")  # a bug, not bad input
            writer.write_tensor_data(data)
            bar.update(1)
    writer.close()


def _quantise_into(f16_writer: Callable[[Path], None], out: Path, quant: str) -> Path:
    """Write an F16 GGUF with `f16_writer`, then give it the type `quant`, atomically at `out`."""
    if quant not in QUANT_TYPES:
        raise ValueError(f"unknown quantisation {quant!r} (choose from {', '.join(QUANT_TYPES)})")
    out = Path(out)
    with _atomic(out) as final:
        if quant == "f16":
            f16_writer(final)
        else:
            from hallmark.backends import quantize_gguf  # imports llama.cpp

            with _temporary(out.parent, out.name + ".f16") as f16:
                f16_writer(f16)
                # Row widths that are not a multiple of 256 (gemma-3-270m's 640, SmolLM2's 576)
                # cannot take K-quants; llama.cpp picks a fallback type for those tensors by itself
                # (q5_0 / q5_1 / q8_0 for q4_k_m), as llama-quantize does.
                quantize_gguf(f16, final, quant)
    return out


def _add_strings(writer: gguf.GGUFWriter, metadata: dict[str, str] | None) -> None:
    for key, value in (metadata or {}).items():
        writer.add_string(key, str(value))


def write_lora_adapter(
    lora: LoraWeights,
    *,
    alpha: float,
    base_gguf: Path,
    out: Path,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A llama.cpp LoRA adapter GGUF for `base_gguf`; returns `out`.

    Tensor names and shapes are those llama.cpp checks at load time: `<base tensor>.weight.lora_a`
    (ggml [in, rank]) and `.lora_b` (ggml [rank, out]), B permuted for llama's query and key like
    the base's weights. Extra string `metadata` is written as given. Raises ValueError for a module
    the base has no tensor for, or of another shape.
    """
    base_gguf, out = Path(base_gguf), Path(out)
    with _GGUFFile(base_gguf) as base:
        layout = _base_layout(base)
        deltas = _deltas(lora, layout, base.shapes(), base_gguf)

    def add_kvs(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        _add_strings(writer, metadata)

    tensors = []
    for name, (a, b) in deltas.items():
        # The adapter is small; F32 keeps it exactly as trained.
        tensors.append(_Tensor(f"{name}.weight.lora_a", a.shape, np.float32, lambda a=a: a))
        tensors.append(_Tensor(f"{name}.weight.lora_b", b.shape, np.float32, lambda b=b: b))
    with _atomic(out) as tmp:
        _write_gguf(tmp, layout.arch, add_kvs, tensors)
    return out


def _copy_kvs(writer: gguf.GGUFWriter, fields: dict[str, _Value]) -> None:
    for key, field in fields.items():
        writer.add_key_value(key, field.value, field.type, sub_type=field.sub_type)


# Keys the writer sets itself (architecture, alignment) or that describe the old tensors.
_NOT_COPIED = (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.ALIGNMENT, gguf.Keys.General.FILE_TYPE)


def write_merged_model(
    base_gguf: Path,
    lora: LoraWeights,
    *,
    alpha: float,
    rank: int,
    out: Path,
    quant: str = "q8_0",
    metadata: dict[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """The base model with the adapter merged into its weights, as a GGUF of type `quant`.

    Every key/value of the base is copied (tokenizer, chat template, hyperparameters); `metadata`
    strings are added or replace the base's. Each base tensor is dequantised, the tensors the
    adapter touches get alpha / rank * B @ A (in llama.cpp's row order), and the result is written
    F16 (1-D tensors F32) and quantised by llama.cpp to `quant` ("f16", "q8_0" or "q4_k_m").
    """
    base_gguf, out = Path(base_gguf), Path(out)
    for module, (a, _) in lora.items():
        if a.shape[0] != rank:
            raise ValueError(f"{module}: LoRA rank {a.shape[0]} is not {rank}")
    scale = float(alpha) / rank
    extra = metadata or {}
    with _GGUFFile(base_gguf) as base:
        layout = _base_layout(base)
        deltas = _deltas(lora, layout, base.shapes(), base_gguf)

        def add_kvs(writer: gguf.GGUFWriter) -> None:
            _copy_kvs(writer, {k: v for k, v in base.fields.items() if k not in (*_NOT_COPIED, *extra)})
            writer.add_file_type(_FTYPE_MOSTLY_F16)
            _add_strings(writer, extra)

        def merged(t: _StoredTensor) -> Callable[[], np.ndarray]:
            def load() -> np.ndarray:
                weight = base.dequantized(t)
                if t.name.endswith(".weight") and t.name.removesuffix(".weight") in deltas:
                    a, b = deltas[t.name.removesuffix(".weight")]
                    weight += scale * (b @ a)
                return weight

            return load

        tensors = [_Tensor(t.name, t.shape, _storage_type(t.shape), merged(t)) for t in base.tensors]
        description = f"merging into {out.name}" if progress else None
        return _quantise_into(
            lambda path: _write_gguf(path, layout.arch, add_kvs, tensors, description), out, quant
        )


# -- a whole model from transformers ----------------------------------------------------------


def _rope(config: Any, layer_type: str | None = None) -> tuple[float, float | None]:
    """(rope theta, linear scaling factor or None) of a config, for one layer type of gemma3."""
    if getattr(config, "rope_parameters", None):  # transformers 5: one dict, or one per layer type
        parameters = config.rope_parameters.get(layer_type, config.rope_parameters)
    elif layer_type == "sliding_attention":  # transformers 4's gemma3
        parameters = {"rope_theta": config.rope_local_base_freq}
    else:  # transformers 4
        parameters = {"rope_theta": config.rope_theta, **(config.rope_scaling or {})}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind not in ("default", "linear"):
        raise ValueError(f"rope type {kind!r} is not supported (default or linear)")
    return float(parameters["rope_theta"]), float(parameters["factor"]) if kind == "linear" else None


def _hyperparameters(hf_model: Any) -> tuple[str, Callable[[gguf.GGUFWriter], None], _Layout]:
    """The GGUF architecture, a function writing its hyperparameters, and its weight layout."""
    config = hf_model.config
    kind = type(hf_model).__name__
    if kind == "LlamaForCausalLM":
        arch = "llama"
    elif kind == "Gemma3ForCausalLM":
        arch = "gemma3"
    else:
        raise ValueError(f"cannot export a {kind} (supported: LlamaForCausalLM, Gemma3ForCausalLM)")
    n_head = int(config.num_attention_heads)
    n_head_kv = int(config.num_key_value_heads or n_head)
    n_layer = int(config.num_hidden_layers)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ValueError(f"{kind}: attention or MLP biases are not supported by this exporter")

    if arch == "llama":
        if config.hidden_act != "silu":
            raise ValueError(f"{kind}: hidden_act {config.hidden_act!r} is not llama's silu")
        theta, factor = _rope(config)
    else:
        # What llama.cpp's gemma3 graph fixes rather than reads: tanh-GELU, a sliding window on 5 of
        # every 6 layers with rope theta 10000 there, and attention scaled by 1/sqrt(head_dim)
        # (by 1/sqrt(hidden/heads) for the 62-layer 27B). A model that differs would run, wrongly.
        if config.hidden_activation != "gelu_pytorch_tanh":
            raise ValueError(f"{kind}: hidden_activation {config.hidden_activation!r} is not tanh-GELU")
        pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n_layer)]
        if list(config.layer_types) != pattern:
            raise ValueError(f"{kind}: llama.cpp needs a full-attention layer every 6th layer exactly")
        scalar = config.hidden_size // n_head if n_layer == 62 else head_dim
        if config.query_pre_attn_scalar != scalar:
            raise ValueError(f"{kind}: query_pre_attn_scalar must be {scalar} for llama.cpp")
        if config.attn_logit_softcapping is not None or getattr(config, "use_bidirectional_attention", False):
            raise ValueError(f"{kind}: attention softcapping and bidirectional attention are not supported")
        if _rope(config, "sliding_attention") != (10000.0, None):
            raise ValueError(f"{kind}: sliding layers must use rope theta 10000 without scaling")
        theta, factor = _rope(config, "full_attention")

    def add_kvs(writer: gguf.GGUFWriter) -> None:
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_rope_freq_base(theta)
        if factor is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(factor)
        if arch == "llama":
            writer.add_rope_dimension_count(head_dim)
        else:
            writer.add_sliding_window(int(config.sliding_window))
            if config.final_logit_softcapping:
                writer.add_final_logit_softcapping(float(config.final_logit_softcapping))

    return arch, add_kvs, _Layout(arch, n_head, n_head_kv)


def write_full_model(
    hf_model: Any,
    *,
    tokenizer_gguf: Path,
    out: Path,
    quant: str = "f16",
    metadata: dict[str, str] | None = None,
    chat_template: bool = True,
) -> Path:
    """A transformers LlamaForCausalLM or Gemma3ForCausalLM as a GGUF that llama.cpp runs.

    `chat_template=False` leaves the tokenizer source's chat template out: a model pretrained from
    scratch continues text and was never taught the template's turns.

    Hyperparameters come from `hf_model.config`, every `tokenizer.*` key/value from `tokenizer_gguf`
    (a GGUF with the same vocabulary), the weights converted as convert_hf_to_gguf.py does (llama
    query/key rows permuted; gemma norms stored as weight + 1; no 'output' tensor when the
    embeddings are tied; embedding rows beyond the tokenizer's vocabulary dropped). Quantised to
    `quant` by llama.cpp. Raises ValueError for a model llama.cpp would run differently.
    """
    arch, add_hyperparameters, layout = _hyperparameters(hf_model)
    tokenizer_gguf = Path(tokenizer_gguf)
    with _GGUFFile(tokenizer_gguf) as source:
        tokenizer = {key: value for key, value in source.fields.items() if key.startswith("tokenizer.")}
    if not chat_template:
        tokenizer.pop("tokenizer.chat_template", None)
    if "tokenizer.ggml.tokens" not in tokenizer:
        raise ValueError(f"{tokenizer_gguf} has no tokenizer")
    n_vocab = len(tokenizer["tokenizer.ggml.tokens"].value)
    tied = bool(getattr(hf_model.config, "tie_word_embeddings", False))
    state = {name: tensor.detach() for name, tensor in hf_model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight", None)
    rows = state["model.embed_tokens.weight"].shape[0]
    if rows < n_vocab:
        raise ValueError(f"the model has {rows} embeddings but {tokenizer_gguf} has {n_vocab} tokens")

    def add_kvs(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        add_hyperparameters(writer)
        if arch == "llama":
            writer.add_vocab_size(n_vocab)
        writer.add_file_type(_FTYPE_MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _copy_kvs(writer, tokenizer)
        _add_strings(writer, metadata)

    def converted(hf_name: str, gguf_name: str, tensor: torch.Tensor) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            data = tensor.float().cpu().numpy()
            if gguf_name in ("token_embd", "output"):
                data = data[:n_vocab]  # padding rows of a vocabulary rounded up (the converter drops them)
            if arch == "gemma3" and hf_name.endswith("norm.weight"):
                data = data + 1.0  # Gemma3RMSNorm computes x * (1 + weight); llama.cpp x * weight
            return layout.to_gguf(gguf_name, data)

        return load

    tensors = []
    for hf_name, tensor in state.items():
        module, _, suffix = hf_name.rpartition(".")
        gguf_name = gguf_tensor_name(module, arch)
        shape = tuple(tensor.shape)
        if gguf_name in ("token_embd", "output"):
            shape = (n_vocab, *shape[1:])
        load = converted(hf_name, gguf_name, tensor)
        tensors.append(_Tensor(f"{gguf_name}.{suffix}", shape, _storage_type(shape), load))
    return _quantise_into(lambda path: _write_gguf(path, arch, add_kvs, tensors), Path(out), quant)
