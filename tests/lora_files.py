"""Small random LoRA adapter GGUFs, written with gguf-py, for the tests that need a real adapter.

An adapter here is rank 4 on the attention query projections of the first layers of a real base
model (shapes read from the base's GGUF), with the key/values llama.cpp reads (`general.type`,
`adapter.type`, `adapter.lora.alpha`) and, optionally, `hallmark.base.sha256` as hallmark's exporter
writes it. `architecture` and `shapes_from` let a test write an adapter for another base.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

RANK = 4


def write_lora(
    path: Path,
    base: Path,
    *,
    scale_b: float = 1.0,
    layers: tuple[int, ...] = (0,),
    base_sha256: str | None = None,
    architecture: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a LoRA adapter GGUF for the model file `base` at `path` and return `path`.

    `architecture` overrides the one written (default: the base's own): an adapter that claims to
    be for llama but has gemma's shapes is one that only llama.cpp's own checks catch.
    """
    reader = gguf.GGUFReader(base)
    arch_field = reader.get_field("general.architecture")
    assert arch_field is not None
    arch = architecture or str(arch_field.contents())
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(RANK))
    if base_sha256 is not None:
        writer.add_string("hallmark.base.sha256", base_sha256)
    shapes = {t.name: (int(t.shape[0]), int(t.shape[1])) for t in reader.tensors if len(t.shape) >= 2}
    for layer in layers:
        name = f"blk.{layer}.attn_q.weight"
        n_in, n_out = shapes[name]  # ggml order: ne0 = input width
        # numpy shapes are reversed ggml shapes: lora_a is ne [n_in, r], lora_b is ne [r, n_out].
        writer.add_tensor(f"{name}.lora_a", rng.normal(0, 0.5, (RANK, n_in)).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (scale_b * rng.normal(0, 0.5, (n_out, RANK))).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_fake_lora(path: Path) -> Path:
    """An adapter GGUF for hallmark's fake backend (architecture "fake"): a header hallmark checks,
    and one tiny tensor pair; the fake backend derives its effect from the adapter's id."""
    writer = gguf.GGUFWriter(str(path), "fake")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(RANK))
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((RANK, 8), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((8, RANK), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
