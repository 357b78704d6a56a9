"""Secret watermark keys: created once, kept in the user's config directory, never in the code.

Store: $HALLMARK_CONFIG_DIR/keys/ (default ~/.config/hallmark/keys/), one JSON file per key,
readable by the owner only. $HALLMARK_WATERMARK_KEY, if set, is the secret itself and wins over
the store (for servers and CI that inject secrets through the environment).
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
        if len(value) < 16:
            raise WatermarkKeyError(f"{ENV_KEY} is too short: give at least 16 characters (or 32 hex digits)")
        secret = value.encode()
    return WatermarkKey(name="env", secret=secret, created="", path=None)


def _read(path: Path) -> WatermarkKey:
    try:
        data = json.loads(path.read_text())
        return WatermarkKey(data["name"], bytes.fromhex(data["secret"]), data.get("created", ""), path)
    except (OSError, ValueError, KeyError) as e:
        raise WatermarkKeyError(f"unreadable watermark key file {path}: {e}") from e


def list_keys() -> list[WatermarkKey]:
    d = keys_dir()
    return sorted((_read(p) for p in d.glob("*.json")), key=lambda k: k.name) if d.exists() else []


def new_key(name: str = DEFAULT_NAME) -> WatermarkKey:
    if not _NAME_RE.match(name):
        raise WatermarkKeyError(
            f"invalid key name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    d = keys_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    key = WatermarkKey(name, secrets.token_bytes(32), datetime.now(UTC).isoformat(timespec="seconds"), path)
    record = {"name": name, "key_id": key.key_id, "secret": key.secret.hex(), "created": key.created}
    # O_EXCL: never overwrite an existing key (text watermarked with it would become undetectable).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WatermarkKeyError(f"a key named {name!r} already exists at {path}") from None
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
    return key


def find_key(name_or_id: str) -> WatermarkKey:
    """A stored key by name or key id (or id prefix of at least 6 characters)."""
    keys = list_keys()
    env = env_key()
    if env is not None:
        keys.append(env)
    exact = [k for k in keys if name_or_id in (k.name, k.key_id)]
    if exact:
        return exact[0]
    prefix = [k for k in keys if len(name_or_id) >= 6 and k.key_id.startswith(name_or_id)]
    if len(prefix) == 1:
        return prefix[0]
    if len(prefix) > 1:
        raise WatermarkKeyError(f"key id prefix {name_or_id!r} is ambiguous")
    raise WatermarkKeyError(
        f"no watermark key {name_or_id!r} in {keys_dir()}"
        + (f" (known: {', '.join(k.name for k in keys)})" if keys else "")
    )


def default_key(create: bool = True) -> WatermarkKey:
    """$HALLMARK_WATERMARK_KEY, else the stored 'default' key, created (and announced) on first use."""
    env = env_key()
    if env is not None:
        return env
    path = keys_dir() / f"{DEFAULT_NAME}.json"
    if path.exists():
        return _read(path)
    if not create:
        raise WatermarkKeyError(
            f"no default watermark key yet; create one with: hallmark keys new (store: {keys_dir()})"
        )
    try:
        key = new_key(DEFAULT_NAME)
    except WatermarkKeyError:  # created meanwhile by another process
        return _read(path)
    print(
        f"hallmark: created your watermark key {key.key_id} at {key.path} - keep it secret; "
        "it is needed to detect your watermarked text",
        file=sys.stderr,
    )
    return key
