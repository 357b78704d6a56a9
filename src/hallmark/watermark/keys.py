"""Secret watermark keys: created once, kept in the user's config directory, never in the code.

Store: $HALLMARK_CONFIG_DIR/keys/ (default ~/.config/hallmark/keys/), one JSON file per key,
`{"name", "key_id", "secret" (hex), "created"}`, 0600 in a directory created 0700 (an existing
directory keeps the mode its owner gave it). $HALLMARK_WATERMARK_KEY, if set, is the secret itself
and wins over the store (for servers and CI that inject secrets through the environment).

Every secret, from a file or the environment, has at least MIN_SECRET_BYTES (16) bytes: a shorter
one would label output watermarked under a key anyone can guess. A key file that cannot be read,
is not JSON, lacks a field, has a field of the wrong type or too short a secret is refused with a
one-line WatermarkKeyError naming the file; so is a store that cannot be created. Listing the store
refuses it whole if one file is corrupt: that file might be the key a detection needs, and saying
"no such key" instead would mislead.

find_key's message for an unknown key names the store and the keys in it (help on the user's own
machine); `reveal=False`, for callers such as the server that answer strangers, matches exact key
ids only and names neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hallmark.errors import WatermarkKeyError

ENV_KEY = "HALLMARK_WATERMARK_KEY"
DEFAULT_NAME = "default"
MIN_SECRET_BYTES = 16
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class WatermarkKey:
    name: str
    secret: bytes
    created: str
    path: Path | None  # None for a key from the environment

    @property
    def key_id(self) -> str:
        """Public identifier: safe to publish, reveals nothing about the secret."""
        return hashlib.sha256(b"hallmark-key-id\0" + self.secret).hexdigest()[:12]


def config_dir() -> Path:
    if env := os.environ.get("HALLMARK_CONFIG_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hallmark"


def keys_dir() -> Path:
    return config_dir() / "keys"


def env_key() -> WatermarkKey | None:
    """The key given by $HALLMARK_WATERMARK_KEY, if set."""
    value = os.environ.get(ENV_KEY)
    if not value:
        return None
    try:
        secret = bytes.fromhex(value) if len(value) >= 32 and len(value) % 2 == 0 else None
    except ValueError:
        secret = None
    if secret is None:
        if len(value) < MIN_SECRET_BYTES:
            raise WatermarkKeyError(
                f"{ENV_KEY} is too short: give at least {MIN_SECRET_BYTES} characters "
                f"(or {2 * MIN_SECRET_BYTES} hex digits)"
            )
        secret = value.encode()
    return WatermarkKey(name="env", secret=secret, created="", path=None)


def _read(path: Path) -> WatermarkKey:
    """The key in `path`, checked field by field (FileNotFoundError passes through)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise  # no such key: the caller decides whether that is an error
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise WatermarkKeyError(f"cannot read the watermark key file {path}: {reason}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than Python allows
        reason = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "nested too deep"
        raise WatermarkKeyError(f"the watermark key file {path} is not valid JSON ({reason})") from None

    def corrupt(why: str) -> WatermarkKeyError:
        return WatermarkKeyError(f"the watermark key file {path} is corrupt: {why}")

    if not isinstance(data, dict):
        raise corrupt("it is not a JSON object")
    name, secret_hex, created = data.get("name"), data.get("secret"), data.get("created", "")
    if not isinstance(secret_hex, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", secret_hex):
        raise corrupt("'secret' must be a string of hex digits")
    if len(secret_hex) < 2 * MIN_SECRET_BYTES:
        raise corrupt(
            f"'secret' is too short: a key needs at least {MIN_SECRET_BYTES} bytes "
            f"({2 * MIN_SECRET_BYTES} hex digits), this one has {len(secret_hex) // 2}"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise corrupt("'name' must be a key name (letters, digits, '.', '_' or '-')")
    if not isinstance(created, str):
        raise corrupt("'created' must be a string")
    key = WatermarkKey(name, bytes.fromhex(secret_hex), created, path)
    # key_id is derived from the secret; a file whose two disagree has been edited or damaged, and
    # text marked under the id it shows could never be detected with it.
    if "key_id" in data and data["key_id"] != key.key_id:
        raise corrupt(f"its key_id does not match its secret (the secret's id is {key.key_id})")
    return key


def _read_if_present(path: Path) -> WatermarkKey | None:
    """The key in `path`, or None if there is no such file (or no such directory above it)."""
    try:
        return _read(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def list_keys() -> list[WatermarkKey]:
    """Every stored key, by name; [] when the store does not exist (yet)."""
    d = keys_dir()
    try:
        paths = sorted(p for p in d.iterdir() if p.suffix == ".json")
    except (FileNotFoundError, NotADirectoryError):
        # No store (or a path through a regular file): nothing is stored there. Creating a key
        # there is what fails, with its own message (new_key).
        return []
    except OSError as e:
        raise WatermarkKeyError(f"cannot read the key directory {d}: {e.strerror}") from None
    keys = [key for key in map(_read_if_present, paths) if key is not None]
    return sorted(keys, key=lambda k: k.name)


def new_key(name: str = DEFAULT_NAME) -> WatermarkKey:
    if not _NAME_RE.match(name):
        raise WatermarkKeyError(
            f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    d = keys_dir()
    try:
        # 0700: only the mode of a directory made here; an existing one is the user's to set.
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise WatermarkKeyError(f"cannot create the key directory {d}: {e.strerror}") from None
    path = d / f"{name}.json"
    key = WatermarkKey(name, secrets.token_bytes(32), datetime.now(UTC).isoformat(timespec="seconds"), path)
    record = {"name": name, "key_id": key.key_id, "secret": key.secret.hex(), "created": key.created}
    # O_EXCL: never overwrite an existing key (text watermarked with it would become undetectable).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WatermarkKeyError(f"a key named {name!r} already exists at {path}") from None
    except OSError as e:
        raise WatermarkKeyError(f"cannot create the key file {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
    except OSError as e:
        # A half-written key file would be refused as corrupt on every later read: remove it.
        path.unlink(missing_ok=True)
        raise WatermarkKeyError(f"cannot write the key file {path}: {e.strerror}") from None
    return key


def find_key(name_or_id: str, reveal: bool = True) -> WatermarkKey:
    """A stored key by name or key id (or id prefix of at least 6 characters).

    reveal=False is for a server, whose clients must learn only whether the exact key id they
    sent is there: it matches the full key id only (a name or a prefix would let a client probe
    for key names and ids), and its messages name neither the key directory, nor its files, nor
    the stored keys.
    """
    shown = name_or_id if len(name_or_id) <= 80 else name_or_id[:77] + "..."
    try:
        keys = list_keys()
        env = env_key()
    except WatermarkKeyError as e:
        if reveal:
            raise
        raise WatermarkKeyError("the watermark key store cannot be read") from e
    if env is not None:
        keys.append(env)
    if not reveal:
        found = next((k for k in keys if k.key_id == name_or_id), None)
        if found is None:
            raise WatermarkKeyError(f"no watermark key with id {shown!r} here")
        return found
    exact = [k for k in keys if name_or_id in (k.name, k.key_id)]
    if exact:
        return exact[0]
    prefix = [k for k in keys if len(name_or_id) >= 6 and k.key_id.startswith(name_or_id)]
    if len(prefix) == 1:
        return prefix[0]
    if len(prefix) > 1:
        raise WatermarkKeyError(f"key id prefix {shown!r} is ambiguous")
    raise WatermarkKeyError(
        f"no watermark key {shown!r} in {keys_dir()}"
        + (f" (known: {', '.join(k.name for k in keys)})" if keys else "")
    )


def default_key(create: bool = True) -> WatermarkKey:
    """$HALLMARK_WATERMARK_KEY, else the stored 'default' key, created (and announced) on first use."""
    env = env_key()
    if env is not None:
        return env
    path = keys_dir() / f"{DEFAULT_NAME}.json"
    stored = _read_if_present(path)
    if stored is not None:
        return stored
    if not create:
        raise WatermarkKeyError(
            f"no default watermark key yet; create one with: hallmark keys new (store: {keys_dir()})"
        )
    try:
        key = new_key(DEFAULT_NAME)
    except WatermarkKeyError:
        # Created meanwhile by another process? Then use that one; otherwise (no directory, no
        # permission) the error is the answer.
        stored = _read_if_present(path)
        if stored is None:
            raise
        return stored
    print(
        f"hallmark: created your watermark key {key.key_id} at {key.path} - keep it secret; "
        "it is needed to detect your watermarked text",
        file=sys.stderr,
    )
    return key
