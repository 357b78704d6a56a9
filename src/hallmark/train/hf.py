"""A GGUF model's weights as a trainable PyTorch model (transformers), dequantised once and cached.

`load_torch_model(path)` returns a transformers causal LM holding the GGUF's weights in float32.
transformers reads GGUF itself (it dequantises every tensor: 15 s for SmolLM2-135M, 31 s for
gemma-3-270m on 2 cores); the result is saved as safetensors under
`<cache dir>/torch/<sha256 of the GGUF>[:16]/`, so later loads take about a second. The cache is
keyed by the file's hash, so a changed file is never served stale weights.

The tokenizer is not taken from transformers: hallmark tokenizes training data with the engine's
own tokenizer (llama.cpp's, the one serving uses), so token ids match between training and serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hallmark.provenance import cache_dir, model_sha256


def torch_cache_dir(gguf_path: str | os.PathLike[str]) -> Path:
    return cache_dir() / "torch" / model_sha256(gguf_path)[:16]


def load_torch_model(gguf_path: str | os.PathLike[str], dtype: Any = None, show_progress: bool = True) -> Any:
    """The GGUF's model in PyTorch (float32 unless `dtype` says otherwise), from the cache if there."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    path = Path(gguf_path).expanduser().resolve()
    cached = torch_cache_dir(path)
    if not show_progress:
        transformers.utils.logging.disable_progress_bar()
    if (cached / "config.json").exists():
        try:
            return AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype)
        except (OSError, ValueError):
            shutil.rmtree(cached, ignore_errors=True)  # a damaged cache: convert again
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are plain float32 tensors now; the "gguf quantizer" marker only blocks saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save(model, cached)
    return model.to(dtype) if dtype != torch.float32 else model


def _save(model: Any, target: Path) -> None:
    """Save atomically: into a temporary folder beside the target, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        try:
            tmp.rename(target)
        except OSError:  # another process cached it first
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, ValueError):
        shutil.rmtree(tmp, ignore_errors=True)  # the cache is an optimisation: a failed write is ignored
