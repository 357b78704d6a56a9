"""A GGUF file's metadata, read without loading its weights (for `hallmark models` and `info`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gguf import LlamaFileType

from hallmark.backends import read_header


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
    if file_type is None:
        return None
    try:
        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except ValueError:
        return file_type
