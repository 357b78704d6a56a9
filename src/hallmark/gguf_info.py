"""A GGUF file's metadata, read without loading its weights (for `hallmark models` and `info`).

`read_adapter_info` reads a LoRA adapter GGUF's own header (an adapter has no vocabulary, so
llama.cpp's vocab-only load cannot read it): the architecture it was made for and, when hallmark's
exporter wrote it, the sha256 of the base model file it was trained on (`hallmark.base.sha256`).
Loading checks both against the base before llama.cpp sees the adapter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.backends import read_header
from hallmark.errors import ModelFileError

BASE_SHA256_KEY = "hallmark.base.sha256"  # written by hallmark's LoRA exporter (hallmark.train.export)


@dataclass
class GGUFInfo:
    path: str
    file_size: int
    architecture: str
    gguf_name: str  # general.name, as the file's author wrote it
    parameters: int
    context_length: int
    vocab_size: int
    has_chat_template: bool
    license: str | None
    quantization: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self, with_metadata: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_metadata:
            d.pop("metadata")
        return d


def read_gguf_info(path: str | Path) -> GGUFInfo:
    path = Path(path)
    header = read_header(path)
    meta = header.metadata
    return GGUFInfo(
        path=str(path),
        file_size=path.stat().st_size,
        architecture=meta.get("general.architecture", "unknown"),
        gguf_name=meta.get("general.name", path.stem),
        parameters=header.n_params,
        context_length=header.n_ctx_train,
        vocab_size=header.n_vocab,
        has_chat_template=bool(meta.get("tokenizer.chat_template")),
        license=meta.get("general.license"),
        quantization=_file_type_name(meta.get("general.file_type")),
        metadata=dict(sorted(meta.items())),
    )


def _file_type_name(file_type: str | None) -> str | None:
    from gguf import LlamaFileType  # gguf-py on first use: `hallmark.model` imports this module

    if file_type is None:
        return None
    try:
        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except ValueError:
        return file_type


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    architecture: str | None  # general.architecture: the model family the adapter is for
    adapter_type: str | None  # adapter.type ("lora")
    base_sha256: str | None  # hallmark.base.sha256: the base GGUF it was trained on, if recorded
    metadata: dict[str, str] = field(default_factory=dict)  # the header's string values


def read_adapter_info(path: str | Path) -> AdapterInfo:
    """A LoRA adapter GGUF's header; ModelFileError (one line) for a missing, unreadable or non-GGUF
    file, or a GGUF that is not a LoRA adapter (a whole model, say)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(f"LoRA adapter not found: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelFileError(f"cannot read the LoRA adapter {path}: {e.strerror}") from None
    if magic != b"GGUF":
        raise ModelFileError(f"the LoRA adapter {path} is not a GGUF file (bad magic bytes {magic!r})")
    from gguf import GGUFReader, GGUFValueType  # on first use: ~50 ms of imports

    try:
        reader = GGUFReader(path)
    except Exception as e:  # gguf-py raises ValueError, struct.error, IndexError... on a damaged file
        raise ModelFileError(
            f"cannot read the LoRA adapter {path} (damaged or truncated GGUF: {e})"
        ) from None
    meta = {
        key: str(fld.contents())
        for key, fld in reader.fields.items()
        if fld.types and fld.types[0] is GGUFValueType.STRING
    }
    info = AdapterInfo(
        path=path,
        architecture=meta.get("general.architecture"),
        adapter_type=meta.get("adapter.type"),
        base_sha256=meta.get(BASE_SHA256_KEY),
        metadata=meta,
    )
    kind = meta.get("general.type")
    if kind != "adapter":
        raise ModelFileError(
            f"{path} is not a LoRA adapter: its general.type is {kind!r}, not 'adapter' (a model file "
            "goes to -m, an adapter to --lora)"
        )
    if info.adapter_type != "lora":
        raise ModelFileError(f"{path} is a {info.adapter_type!r} adapter, not a LoRA one")
    return info
