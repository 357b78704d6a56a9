"""The local registry of fine-tuned models: a name -> a base model plus a LoRA adapter, or a merged GGUF.

A registered name works wherever a model name does: `hallmark.catalog.resolve` turns it into the
base model's file and the adapter file(s) (or the merged file), and everything that loads a model
goes through `resolve`.

Two sources, looked up in this order:

- the user's entries: one JSON file per name in `$HALLMARK_DATA_DIR/models/` (default
  `$XDG_DATA_HOME/hallmark/models/`, i.e. `~/.local/share/hallmark/models/`), written atomically
  (a reader sees the old file or the new, never half of one), 0600 in a directory made 0700;
- the shipped entries: `hallmark/adapters/index.json`, a JSON list of entries whose adapter files
  sit beside it (their paths are relative to that folder).

An entry is a JSON object: `name`; `base` (a catalog name, or the path of the base GGUF);
`adapter` (the path of a LoRA GGUF) and/or `merged` (the path of a merged GGUF), at least one;
`data_sha256` (the sha256 of the training data); `task` and `style` (the task and prompt style it
was trained for, e.g. "translation" and "zeroshot"); `created` (RFC 3339); `recipe` (the command
and arguments that reproduce it) and `metrics` (objects). With an adapter the name runs the base
with it; with only a merged file, that file.

No entry may take a catalog model's name: `register` refuses one, and `resolve` looks at the catalog
first, so a hand-written file with such a name is never used either. This module and the catalog
are one layer: the catalog resolves registry names through `find`, and `register` asks the catalog
which names are taken (imported inside the function, so neither module imports the other at import
time). A file that is not a valid entry is a one-line RegistryError naming the file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hallmark.errors import HallmarkError, ModelFileError, UnknownModelError

SHIPPED_DIR = Path(__file__).resolve().parent / "adapters"
SHIPPED_INDEX = SHIPPED_DIR / "index.json"
# A name is also a file name: no path separators, no leading dot, nothing a shell must quote.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

Source = Literal["user", "shipped"]


class RegistryError(HallmarkError, ValueError):
    """A registry entry that is malformed, cannot be written, or may not be registered."""


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    base: str  # a catalog name, or the path of the base GGUF
    adapter: str | None = None  # path of a LoRA adapter GGUF for `base`
    merged: str | None = None  # path of a GGUF with the adapter merged into the base's weights
    data_sha256: str | None = None  # sha256 of the training data
    task: str | None = None  # the task it was trained for ("translation", "summarization", "qa")
    style: str | None = None  # the task prompt style it was trained with ("zeroshot", "chat", ...)
    created: str = ""  # RFC 3339, UTC; register() fills it in when empty
    recipe: dict[str, Any] = field(default_factory=dict)  # the command/arguments that reproduce it
    metrics: dict[str, Any] = field(default_factory=dict)
    source: Source = field(default="user", compare=False)  # where it was found; not stored

    @property
    def kind(self) -> Literal["lora", "merged"]:
        """ "lora" when the name runs the base with an adapter, "merged" when it runs a merged file."""
        return "lora" if self.adapter is not None else "merged"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored for this entry."""
        return {
            "name": self.name,
            "base": self.base,
            "adapter": self.adapter,
            "merged": self.merged,
            "data_sha256": self.data_sha256,
            "task": self.task,
            "style": self.style,
            "created": self.created,
            "recipe": self.recipe,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(
        cls, data: Any, where: str, relative_to: Path | None = None, source: Source = "user"
    ) -> RegistryEntry:
        """An entry from its JSON object; RegistryError naming `where` for anything malformed.

        Relative adapter and merged paths are taken relative to `relative_to` (the shipped folder).
        """
        if not isinstance(data, dict):
            raise RegistryError(f"{where}: an entry must be a JSON object")
        values: dict[str, Any] = {}
        for key, kinds, required in (
            ("name", str, True),
            ("base", str, True),
            ("adapter", str, False),
            ("merged", str, False),
            ("data_sha256", str, False),
            ("task", str, False),
            ("style", str, False),
            ("created", str, False),
            ("recipe", dict, False),
            ("metrics", dict, False),
        ):
            value = data.get(key)
            if value is None:
                if required:
                    raise RegistryError(f"{where}: the entry has no '{key}'")
                continue
            if not isinstance(value, kinds):
                want = "an object" if kinds is dict else "a string"
                raise RegistryError(f"{where}: '{key}' must be {want}")
            values[key] = value
        for key in ("adapter", "merged"):
            if key in values and relative_to is not None and not Path(values[key]).is_absolute():
                values[key] = str(relative_to / values[key])
        entry = cls(**values, source=source)
        _check_entry(entry, where)
        return entry


def data_dir() -> Path:
    """hallmark's data directory: $HALLMARK_DATA_DIR, else $XDG_DATA_HOME/hallmark, else
    ~/.local/share/hallmark."""
    if env := os.environ.get("HALLMARK_DATA_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "hallmark"


def models_dir() -> Path:
    """Where the user's registry entries are: one `<name>.json` each."""
    return data_dir() / "models"


def check_name(name: str) -> None:
    """Refuse a name that cannot be a registry entry's (it is a file name, and a model name)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.lower().endswith(".gguf"):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits and . _ + - (at most 100, starting "
            "with a letter or digit, not ending in .gguf)"
        )


def _check_entry(entry: RegistryEntry, where: str) -> None:
    check_name(entry.name)
    if not entry.base.strip():
        raise RegistryError(f"{where}: 'base' is empty")
    if entry.adapter is None and entry.merged is None:
        raise RegistryError(f"{where}: an entry needs an 'adapter' or a 'merged' file")
    if entry.data_sha256 is not None and not _HEX64.match(entry.data_sha256):
        raise RegistryError(f"{where}: 'data_sha256' must be 64 lowercase hex digits")


def _entry_file(name: str) -> Path:
    check_name(name)
    return models_dir() / f"{name}.json"


def _read_file(path: Path) -> RegistryEntry:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RegistryError(f"cannot read the registry entry {path}: {getattr(e, 'strerror', e)}") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise RegistryError(f"the registry entry {path} is not valid JSON") from None
    entry = RegistryEntry.from_dict(data, str(path))
    if entry.name != path.stem:
        raise RegistryError(f"{path}: the entry is named {entry.name!r}, not {path.stem!r} as its file")
    return entry


def shipped_entries() -> list[RegistryEntry]:
    """The entries that ship with hallmark (hallmark/adapters/index.json)."""
    where = str(SHIPPED_INDEX)
    try:
        data = json.loads(SHIPPED_INDEX.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise RegistryError(f"cannot read the shipped model index {where}: {e}") from None
    if not isinstance(data, list):
        raise RegistryError(f"{where}: the index must be a JSON list of entries")
    return [
        RegistryEntry.from_dict(item, f"{where} entry {i}", relative_to=SHIPPED_DIR, source="shipped")
        for i, item in enumerate(data)
    ]


def user_entries() -> list[RegistryEntry]:
    """The user's own entries, by name. One malformed file fails the listing (with its name):
    leaving it out would hide a model the user expects to see."""
    try:
        files = sorted(models_dir().glob("*.json"))
    except OSError as e:
        raise RegistryError(f"cannot list the model registry {models_dir()}: {e.strerror}") from None
    return [_read_file(p) for p in files]


def find(name: str) -> RegistryEntry | None:
    """The entry called `name`: the user's own first, then a shipped one; None if neither has it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        return None  # a path or a stray string is no entry's name
    path = models_dir() / f"{name}.json"
    if path.is_file():
        return _read_file(path)
    return next((e for e in shipped_entries() if e.name == name), None)


def entries() -> list[RegistryEntry]:
    """Every entry: the user's, then the shipped ones that no user entry of the same name hides."""
    mine = user_entries()
    taken = {e.name for e in mine}
    return mine + [e for e in shipped_entries() if e.name not in taken]


def register(entry: RegistryEntry, overwrite: bool = False) -> RegistryEntry:
    """Store `entry` under its name and return it as stored (paths made absolute, `created` set).

    Refuses a catalog model's name or alias, an entry whose adapter/merged file does not exist, and
    a name already registered unless `overwrite`.
    """
    from hallmark.catalog import find_entry  # the catalog imports this module at import time

    check_name(entry.name)
    if find_entry(entry.name) is not None:
        raise RegistryError(f"{entry.name!r} is the name of a built-in model; choose another name")
    base_entry = find_entry(entry.base)
    if base_entry is not None:
        base = base_entry.name
    else:
        base_path = Path(entry.base).expanduser()
        if not base_path.is_file():
            raise ModelFileError(
                f"the base model of {entry.name} is neither a catalog name nor a file: {base_path}"
            )
        base = str(base_path.resolve())
    files: dict[str, str | None] = {}
    for key in ("adapter", "merged"):
        value = getattr(entry, key)
        if value is None:
            files[key] = None
            continue
        path = Path(value).expanduser()
        if not path.is_file():
            raise ModelFileError(f"the {key} file of {entry.name} does not exist: {path}")
        files[key] = str(path.resolve())
    created = entry.created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stored = replace(entry, base=base, created=created, source="user", **files)
    _check_entry(stored, entry.name)
    _write_atomically(_entry_file(entry.name), stored.to_dict(), overwrite)
    return stored


def remove(name: str) -> None:
    """Delete the user's entry called `name` (never the adapter or merged files it names)."""
    path = _entry_file(name)
    try:
        path.unlink()
    except FileNotFoundError:
        shipped = any(e.name == name for e in shipped_entries())
        if shipped:
            raise RegistryError(f"{name} ships with hallmark and cannot be removed") from None
        raise UnknownModelError(f"no registered model named {name!r} (see `hallmark models`)") from None
    except OSError as e:
        raise RegistryError(f"cannot remove {path}: {e.strerror}") from None


def _write_atomically(path: Path, data: dict[str, Any], overwrite: bool) -> None:
    """Write `data` as JSON to `path` (0600, its directory 0700) so that no reader sees half a file.

    Without `overwrite` the file is linked into place, which fails if the name exists even when
    two processes register it at the same moment.
    """
    directory = path.parent
    try:
        data_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".json", dir=directory)  # 0600
    except OSError as e:
        raise RegistryError(f"cannot write to the model registry {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise RegistryError(
                    f"a model named {path.stem} is already registered; remove it first "
                    "(`hallmark models rm`) or register with overwrite=True"
                ) from None
    except OSError as e:
        raise RegistryError(f"cannot write the registry entry {path}: {e.strerror}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
