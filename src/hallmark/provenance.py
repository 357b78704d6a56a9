"""Signed provenance manifests: who generated a text, with what, and under which watermark and policy.

A manifest is a JSON object that states, for one generated text: an id, the creation time, the
generator, the model's name and the sha256 of its GGUF file, the watermark spec id and whether it
was applied, the policy's name and sha256, the sha256 (and length) of the text, and the
AI-generated disclosure; and an Ed25519 signature over all of that (docs/provenance.md):

    {"format": "hallmark-provenance/1", "id": "urn:uuid:...", "created": "2026-05-09T12:00:00Z",
     "generator": "hallmark/0.1.0", "request_id": null, "ai_generated": true, "disclosure": "...",
     "model": {"name": ..., "sha256": ...}, "watermark": {"spec_id": ..., "applied": true},
     "policy": {"name": ..., "sha256": ...}, "text": {"sha256": ..., "length": 812},
     "signature": {"alg": "EdDSA", "kid": "<RFC 7638 thumbprint>", "value": "<base64url, 64 bytes>"}}

A model that ran with LoRA adapters adds them to its "model" object, in the order they were given:
`"adapters": [{"name": ..., "sha256": <of the adapter GGUF>, "scale": "1"}]` (the scale as a
decimal string: the canonical form carries no floats). "model.sha256" stays the base file's. A
manifest without adapters has no "adapters" member, so manifests from before it verify unchanged.

What is signed: the UTF-8 bytes of the manifest without its "signature" member, serialized as JSON
with keys sorted, no whitespace and non-ASCII characters as themselves (`json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`). For the values a manifest may hold (strings, booleans,
null, integers below 2**53, objects with ASCII keys; floats are refused) this is exactly the JSON
Canonicalization Scheme (RFC 8785), so any language can recompute it. Members beyond the ones above
are allowed and signed too.

The signing key: $HALLMARK_PROVENANCE_KEY (64 hex digits of Ed25519 seed, a private JWK, or a PKCS#8
PEM) for servers and CI, else `<config dir>/provenance/ed25519.json` (a private JWK plus "created";
the config dir is the watermark keys', hallmark.watermark.keys.config_dir), created on first use with
a one-line notice on stderr, 0600 in a directory created 0700, and never overwritten: manifests
signed with it could no longer be verified. Its key id (kid) is the RFC 7638 JWK thumbprint of the
public key. `public_keys()` is the JWKS a server publishes; `read_public_keys()` loads one (or a
single JWK, or a PEM public key) to verify other people's manifests offline.

`verify_manifest` checks, in order: that the manifest is well formed (else a one-line
ProvenanceError naming the field), that its kid is a trusted key, that the signature verifies, and
that the text's sha256 matches; the result names the first check that failed. Watermark detection
with the manifest's spec needs the tokenizer and the watermark's secret key, so the `hallmark verify`
command runs it (hallmark.cli.provenance), not this module.

Signing is thread-safe and cheap (the key is loaded once per process and source; one Ed25519
signature is ~50 us). `model_sha256` caches file hashes by path, size and mtime.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hallmark.errors import HallmarkError
from hallmark.watermark.keys import config_dir

FORMAT = "hallmark-provenance/1"
ALG = "EdDSA"
ENV_KEY = "HALLMARK_PROVENANCE_KEY"
KEY_FILE_NAME = "ed25519.json"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_MAX_SAFE_INT = 2**53 - 1  # RFC 8785 numbers are IEEE doubles: larger integers would not round-trip


class ProvenanceError(HallmarkError, ValueError):
    """A malformed manifest or key, or a key that cannot be read or created (one line, naming what)."""


# -- encoding helpers -----------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str, length: int) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ProvenanceError(f"{what} is not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(data) != length:
        raise ProvenanceError(f"{what} must decode to {length} bytes, not {len(data)}")
    return data


def text_sha256(text: str) -> str:
    """The sha256 of the text's UTF-8 bytes, as a manifest records it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_canonical(value: Any, where: str) -> None:
    """Refuse what the canonical form cannot represent the same way in every language."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii():
                raise ProvenanceError(f"manifest field {where}{k!r}: keys must be ASCII strings")
            _check_canonical(v, f"{where}{k}.")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_canonical(v, f"{where}{i}.")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise ProvenanceError(f"manifest field '{where.rstrip('.')}' is an integer beyond 2**53")
    elif isinstance(value, float):
        raise ProvenanceError(
            f"manifest field '{where.rstrip('.')}' is a fraction: the format holds integers only"
        )
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProvenanceError(f"manifest field '{where.rstrip('.')}' is not valid Unicode") from None
    else:
        raise ProvenanceError(f"manifest field '{where.rstrip('.')}' is a {type(value).__name__}, not JSON")


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a manifest's signature covers: RFC 8785 JSON of the manifest minus "signature"."""
    payload = {k: v for k, v in manifest.items() if k != "signature"}
    _check_canonical(payload, "")
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- keys -----------------------------------------------------------------------------------------
def _thumbprint(public_raw: bytes) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key: the key id."""
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_raw)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(members.encode("ascii")).digest())


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return _thumbprint(_raw_public(key))


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 8037): safe to publish."""
    raw = _raw_public(key)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": ALG,
        "use": "sig",
        "kid": _thumbprint(raw),
        "x": _b64url(raw),
    }


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey = field(repr=False)
    kid: str
    created: str
    path: Path | None  # None for a key from $HALLMARK_PROVENANCE_KEY

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"${ENV_KEY}"


def _signing_key(private: Ed25519PrivateKey, created: str, path: Path | None) -> SigningKey:
    return SigningKey(private, key_id(private.public_key()), created, path)


def provenance_dir() -> Path:
    return config_dir() / "provenance"


def key_path() -> Path:
    return provenance_dir() / KEY_FILE_NAME


def _check_ed25519_jwk(data: Any, where: str) -> None:
    """A JWK object of an Ed25519 key (public or private); `where` names the source in errors."""
    if not isinstance(data, dict):
        raise ProvenanceError(f"{where} is not a JSON object")
    if data.get("kty") != "OKP" or data.get("crv") != "Ed25519":
        raise ProvenanceError(f'{where} is not an Ed25519 key (it needs "kty": "OKP", "crv": "Ed25519")')


def _private_from_jwk(data: Any, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from a JWK object; `where` names the source in errors."""
    _check_ed25519_jwk(data, where)
    d = data.get("d")
    if not isinstance(d, str):
        raise ProvenanceError(f"{where} has no private key: 'd' must be a base64url string")
    private = Ed25519PrivateKey.from_private_bytes(_b64url_decode(d, f"{where}: 'd'", 32))
    raw = _raw_public(private.public_key())
    # x and kid are derived from d; a file whose fields disagree has been edited or damaged, and
    # manifests signed with it would name a key that cannot verify them.
    if "x" in data and data["x"] != _b64url(raw):
        raise ProvenanceError(f"{where}: 'x' is not the public key of 'd'")
    if "kid" in data and data["kid"] != _thumbprint(raw):
        raise ProvenanceError(f"{where}: 'kid' does not match the key (its thumbprint is {_thumbprint(raw)})")
    return private


def _key_from_env(value: str) -> SigningKey:
    """$HALLMARK_PROVENANCE_KEY: 64 hex digits (the 32-byte seed), a private JWK, or a PKCS#8 PEM."""
    value = value.strip()
    where = f"${ENV_KEY}"
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return _signing_key(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(value)), "", None)
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            raise ProvenanceError(f"{where} is not valid JSON") from None
        return _signing_key(_private_from_jwk(data, where), "", None)
    if value.startswith("-----BEGIN"):
        try:
            private = serialization.load_pem_private_key(value.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError) as e:
            raise ProvenanceError(f"{where} is not a readable unencrypted PEM private key ({e})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ProvenanceError(f"{where} is a PEM key but not an Ed25519 one")
        return _signing_key(private, "", None)
    raise ProvenanceError(
        f"{where} must be 64 hex digits (an Ed25519 seed), a private JWK or a PKCS#8 PEM Ed25519 key"
    )


def _read_key_file(path: Path) -> SigningKey:
    """The key in `path`, checked field by field (FileNotFoundError passes through)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProvenanceError(f"cannot read the provenance key file {path}: {reason}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProvenanceError(f"the provenance key file {path} is corrupt: it is not valid JSON") from None
    where = f"the provenance key file {path}"
    private = _private_from_jwk(data, where)
    created = data.get("created", "")
    if not isinstance(created, str):
        raise ProvenanceError(f"{where}: 'created' must be a string")
    return _signing_key(private, created, path)


def _create_key_file(path: Path) -> SigningKey:
    """A new key at `path`, never replacing a file there (FileExistsError if one appeared)."""
    try:
        # 0700: only the mode of a directory made here; an existing one is the user's to set.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise ProvenanceError(
            f"cannot create the provenance key directory {path.parent}: {e.strerror}"
        ) from None
    private = Ed25519PrivateKey.generate()
    created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    record = {
        **public_jwk(private.public_key()),
        "d": _b64url(private.private_bytes_raw()),
        "created": created,
    }
    # Written in full to a temporary file, then hard-linked into place: link() fails if the name
    # exists (never an overwrite), and no other process can ever read a half-written key.
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ed25519-", dir=path.parent)  # mkstemp: mode 0600
    except OSError as e:
        raise ProvenanceError(f"cannot create the provenance key file {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2)
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        raise ProvenanceError(f"cannot create the provenance key file {path}: {e.strerror}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _signing_key(private, created, path)


_KEY_LOCK = threading.Lock()
_KEYS: dict[tuple[str | None, str], SigningKey] = {}  # (env value, key path) -> key


def signing_key(create: bool = True) -> SigningKey:
    """$HALLMARK_PROVENANCE_KEY, else the stored key, created (and announced) on first use.

    Loaded once per process and source, under a lock: callers on many threads share it.
    """
    key = _load_key(create)
    if key is None:
        raise ProvenanceError(
            f"no provenance signing key yet (it is created on the first signed generation, at {key_path()})"
        )
    return key


def _load_key(create: bool) -> SigningKey | None:
    env = os.environ.get(ENV_KEY) or None
    path = key_path()
    cache_key = (env, str(path))
    key = _KEYS.get(cache_key)
    if key is not None:
        return key
    with _KEY_LOCK:
        key = _KEYS.get(cache_key)
        if key is not None:
            return key
        if env is not None:
            key = _key_from_env(env)
        else:
            try:
                key = _read_key_file(path)
            except (FileNotFoundError, NotADirectoryError):
                if not create:
                    return None
                try:
                    key = _create_key_file(path)
                except FileExistsError:
                    key = _read_key_file(path)  # another process created it meanwhile: use that one
                else:
                    print(
                        f"hallmark: created your provenance signing key {key.kid} at {path} - keep it "
                        "secret; publish its public key (hallmark provenance key) so others can verify "
                        "your manifests",
                        file=sys.stderr,
                    )
        _KEYS[cache_key] = key
        return key


def public_keys(create: bool = True) -> dict[str, list[dict[str, str]]]:
    """The JWKS (RFC 7517) of the signing key, as `GET /v1/provenance/keys` publishes it."""
    return {"keys": [public_jwk(signing_key(create=create).public)]}


def _public_from_jwk(data: Any, where: str) -> Ed25519PublicKey:
    _check_ed25519_jwk(data, where)
    x = data.get("x")
    if not isinstance(x, str):
        raise ProvenanceError(f"{where}: 'x' must be a base64url string")
    return Ed25519PublicKey.from_public_bytes(_b64url_decode(x, f"{where}: 'x'", 32))


def parse_public_keys(doc: Any, where: str = "the public key") -> dict[str, Ed25519PublicKey]:
    """kid -> key from a JWKS ({"keys": [...]}) or a single JWK. Non-Ed25519 keys in a JWKS are skipped.

    Each key is found under its RFC 7638 thumbprint (the kid hallmark signs with) and, if the JWK
    names one, under its own "kid" too.
    """
    if isinstance(doc, dict) and "keys" in doc:
        if not isinstance(doc["keys"], list):
            raise ProvenanceError(f"{where}: 'keys' must be a list")
        jwks = [(k, f"{where}: key {i}") for i, k in enumerate(doc["keys"])]
        jwks = [(k, w) for k, w in jwks if not (isinstance(k, dict) and k.get("crv") != "Ed25519")]
        if not jwks:
            raise ProvenanceError(f"{where} holds no Ed25519 key")
    else:
        jwks = [(doc, where)]
    found: dict[str, Ed25519PublicKey] = {}
    for jwk, w in jwks:
        public = _public_from_jwk(jwk, w)
        found[key_id(public)] = public
        if isinstance(jwk.get("kid"), str):
            found[jwk["kid"]] = public
    return found


def read_public_keys(source: str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """kid -> key from a file holding a JWKS, a JWK (public or private: only its public half is
    used) or a PEM public key."""
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ProvenanceError(f"cannot read the public key file {path}: {reason}") from None
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            public = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ProvenanceError(f"the public key file {path} is not a readable PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ProvenanceError(f"the public key file {path} holds a PEM key, but not an Ed25519 one")
        return {key_id(public): public}
    try:
        doc = json.loads(stripped)
    except (ValueError, RecursionError):
        raise ProvenanceError(
            f"the public key file {path} is neither JSON (a JWKS or JWK) nor a PEM public key"
        ) from None
    return parse_public_keys(doc, f"the public key file {path}")


def own_public_keys() -> dict[str, Ed25519PublicKey]:
    """kid -> key for this machine's signing key, if it has one (never created here)."""
    key = _load_key(create=False)
    return {} if key is None else {key.kid: key.public}


# -- model hash -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    if env := os.environ.get("HALLMARK_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hallmark"


_HASH_LOCK = threading.Lock()
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, this process
_MAX_CACHED = 256  # entries kept in the cache file


def _read_hash_cache(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}  # no cache, or a damaged one: hash again and write a new one
    return data if isinstance(data, dict) else {}


def model_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a model file, hashed once per path, size and mtime.

    Found, in order: in this process's memory; in the `.verified` stamp the catalog writes beside
    a model it assembled and checked (hallmark.catalog); in `<cache dir>/sha256.json`
    ($HALLMARK_CACHE_DIR, else $XDG_CACHE_HOME/hallmark, else ~/.cache/hallmark); else hashed (gemma's
    250 MB take ~0.5 s) and stored there. The cache is an optimisation: one that cannot be read or
    written is ignored.
    """
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError as e:
        raise ProvenanceError(f"cannot hash the model file {p}: {e.strerror}") from None
    if not p.is_file():
        raise ProvenanceError(f"cannot hash the model file {p}: it is not a file")
    mem_key = (str(p), st.st_size, st.st_mtime_ns)
    if (sha := _HASHES.get(mem_key)) is not None:
        return sha
    with _HASH_LOCK:  # one thread hashes; the others wait for its answer
        if (sha := _HASHES.get(mem_key)) is not None:
            return sha
        sha = _stamped_sha256(p, st) or _cached_sha256(p, st)
        if sha is None:
            sha = _hash_file(p)
            _store_sha256(p, st, sha)
        _HASHES[mem_key] = sha
        return sha


def _stamped_sha256(p: Path, st: os.stat_result) -> str | None:
    # The catalog's stamp is "<sha256> <size> <mtime_ns>", written after it checked the file.
    try:
        parts = p.with_name(p.name + ".verified").read_text().split()
    except OSError:
        return None
    if len(parts) == 3 and _HEX64.match(parts[0]) and parts[1:] == [str(st.st_size), str(st.st_mtime_ns)]:
        return parts[0]
    return None


def _cached_sha256(p: Path, st: os.stat_result) -> str | None:
    entry = _read_hash_cache(cache_dir() / "sha256.json").get(str(p))
    if (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and isinstance(entry.get("sha256"), str)
        and _HEX64.match(entry["sha256"])
    ):
        return entry["sha256"]
    return None


def _hash_file(p: Path) -> str:
    digest = hashlib.sha256()
    try:
        with p.open("rb") as f:
            while block := f.read(4 << 20):
                digest.update(block)
    except OSError as e:
        raise ProvenanceError(f"cannot hash the model file {p}: {e.strerror}") from None
    return digest.hexdigest()


def _store_sha256(p: Path, st: os.stat_result, sha: str) -> None:
    d = cache_dir()
    file = d / "sha256.json"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = _read_hash_cache(file)
        data.pop(str(p), None)
        data[str(p)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        data = dict(list(data.items())[-_MAX_CACHED:])  # newest last: drop the oldest
        # Atomic replace: a reader in another process sees the old cache or the new, never half.
        fd, tmp = tempfile.mkstemp(prefix=".sha256-", suffix=".json", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, file)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # a read-only or full cache dir: the next process hashes again, nothing worse


# -- building -------------------------------------------------------------------------------------
_GENERATOR: str | None = None


def _generator() -> str:
    global _GENERATOR
    if _GENERATOR is None:
        from hallmark import __version__  # importlib.metadata is slow to import: only when signing

        _GENERATOR = f"hallmark/{__version__}"
    return _GENERATOR


def _rfc3339(t: datetime | int | None) -> str:
    if t is None:
        t = datetime.now(UTC)
    elif isinstance(t, bool) or not isinstance(t, (datetime, int)):
        raise ProvenanceError(f"created must be a datetime or Unix seconds, not {type(t).__name__}")
    elif isinstance(t, int):
        t = datetime.fromtimestamp(t, UTC)
    elif t.tzinfo is None:
        raise ProvenanceError("created must be an aware datetime (with a time zone)")
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _need(value: Any, name: str, kind: type | tuple[type, ...], nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ProvenanceError(
            f"{name} must be a {want}{' or None' if nullable else ''}, not {type(value).__name__}"
        )


def ai_disclosure(model: str, watermark_spec_id: str | None, watermark_applied: bool, greedy: bool) -> str:
    """The plain-language statement that a text is AI-generated (manifests, the server's headers)."""
    text = (
        f"AI-generated text from the language model {model}, generated with hallmark; "
        "not written by a person."
    )
    if watermark_applied:
        text += (
            f" It carries the statistical watermark {watermark_spec_id}; "
            "verify with `hallmark detect` or POST /v1/detect."
        )
    elif greedy:
        text += " Greedy decoding (temperature 0) carries no watermark."
    return text


def build_manifest(
    *,
    text: str,
    model: str,
    model_sha256: str,
    watermark_spec_id: str | None,
    watermark_applied: bool,
    policy_name: str | None,
    policy_sha256: str | None,
    disclosure: str,
    request_id: str | None = None,
    created: datetime | int | None = None,
    adapters: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """A signed manifest for `text`, as a JSON-ready dict (see the module docstring for its format).

    `policy_name`/`policy_sha256` are None together when no policy applied; `watermark_spec_id` is
    None when the model has no watermark (then `watermark_applied` must be False). `created`: now
    by default, or an aware datetime, or Unix seconds. `adapters`: the LoRA adapters the model ran
    with, each {"name", "sha256", "scale"} (strings). Raises ProvenanceError on ill-typed input,
    and when the signing key cannot be read or created.
    """
    _need(text, "text", str)
    _need(model, "model", str)
    _need(model_sha256, "model_sha256", str)
    _need(watermark_spec_id, "watermark_spec_id", str, nullable=True)
    _need(watermark_applied, "watermark_applied", bool)
    _need(policy_name, "policy_name", str, nullable=True)
    _need(policy_sha256, "policy_sha256", str, nullable=True)
    _need(disclosure, "disclosure", str)
    _need(request_id, "request_id", str, nullable=True)
    if not _HEX64.match(model_sha256):
        raise ProvenanceError("model_sha256 must be 64 lowercase hex digits")
    if policy_sha256 is not None and not _HEX64.match(policy_sha256):
        raise ProvenanceError("policy_sha256 must be 64 lowercase hex digits")
    if (policy_name is None) != (policy_sha256 is None):
        raise ProvenanceError("policy_name and policy_sha256 must both be given, or both be None")
    if watermark_applied and watermark_spec_id is None:
        raise ProvenanceError("watermark_applied is True but watermark_spec_id is None")
    model_info: dict[str, Any] = {"name": model, "sha256": model_sha256}
    if adapters:
        model_info["adapters"] = [dict(a) for a in adapters]
        _check_adapters(model_info["adapters"])
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": f"urn:uuid:{uuid.uuid4()}",
        "created": _rfc3339(created),
        "generator": _generator(),
        "request_id": request_id,
        "ai_generated": True,
        "disclosure": disclosure,
        "model": model_info,
        "watermark": {"spec_id": watermark_spec_id, "applied": watermark_applied},
        "policy": {"name": policy_name, "sha256": policy_sha256},
        "text": {"sha256": text_sha256(text), "length": len(text)},
    }
    return sign_manifest(manifest)


def _check_adapters(adapters: Any) -> None:
    """'model.adapters', when a manifest has it: a list of {"name", "sha256", "scale"} strings."""
    if not isinstance(adapters, list) or not adapters:
        raise ProvenanceError("manifest field 'model.adapters' must be a non-empty list")
    for i, adapter in enumerate(adapters):
        where = f"model.adapters[{i}]"
        if not isinstance(adapter, dict):
            raise ProvenanceError(f"manifest field '{where}' must be an object, not {_json_type(adapter)}")
        for name in ("name", "sha256", "scale"):
            if not isinstance(adapter.get(name), str):
                raise ProvenanceError(f"manifest field '{where}.{name}' must be a string")
        if not _HEX64.match(adapter["sha256"]):
            raise ProvenanceError(f"manifest field '{where}.sha256' must be 64 lowercase hex digits")


def sign_manifest(manifest: Mapping[str, Any], key: SigningKey | None = None) -> dict[str, Any]:
    """`manifest` (any "signature" dropped) with a signature by `key` (default: signing_key())."""
    key = key or signing_key()
    payload = {k: v for k, v in manifest.items() if k != "signature"}
    signature = key.private.sign(canonical_bytes(payload))
    return {**payload, "signature": {"alg": ALG, "kid": key.kid, "value": _b64url(signature)}}


# -- verifying ------------------------------------------------------------------------------------
def _field(
    manifest: Mapping[str, Any], dotted: str, kind: type | tuple[type, ...], nullable: bool = False
) -> Any:
    value: Any = manifest
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(value, dict):
            raise ProvenanceError(f"manifest field '{'.'.join(parts[:i])}' must be an object")
        if part not in value:
            raise ProvenanceError(f"the manifest has no '{dotted}' field")
        value = value[part]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        want = {str: "a string", bool: "true or false", int: "an integer", dict: "an object"}
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(want.get(k, k.__name__) for k in kinds) + (" or null" if nullable else "")
        raise ProvenanceError(f"manifest field '{dotted}' must be {expected}, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def check_manifest(manifest: Any) -> None:
    """Raise a one-line ProvenanceError naming the first missing or ill-typed field."""
    if not isinstance(manifest, dict):
        raise ProvenanceError(f"a manifest must be a JSON object, not {_json_type(manifest)}")
    fmt = _field(manifest, "format", str)
    if fmt != FORMAT:
        raise ProvenanceError(f"unsupported manifest format {fmt[:60]!r}; this hallmark reads {FORMAT!r}")
    for name in ("id", "created", "generator", "disclosure", "model.name"):
        _field(manifest, name, str)
    _field(manifest, "request_id", str, nullable=True)
    _field(manifest, "ai_generated", bool)
    _field(manifest, "watermark.spec_id", str, nullable=True)
    _field(manifest, "watermark.applied", bool)
    _field(manifest, "policy.name", str, nullable=True)
    for name, nullable in (("model.sha256", False), ("text.sha256", False), ("policy.sha256", True)):
        value = _field(manifest, name, str, nullable=nullable)
        if value is not None and not _HEX64.match(value):
            raise ProvenanceError(f"manifest field '{name}' must be 64 lowercase hex digits")
    if "adapters" in manifest["model"]:
        _check_adapters(manifest["model"]["adapters"])
    if _field(manifest, "text.length", int) < 0:
        raise ProvenanceError("manifest field 'text.length' must not be negative")
    try:
        datetime.fromisoformat(manifest["created"])
    except ValueError:
        raise ProvenanceError("manifest field 'created' is not an RFC 3339 time") from None
    alg = _field(manifest, "signature.alg", str)
    if alg != ALG:
        raise ProvenanceError(f"manifest field 'signature.alg' must be {ALG!r}, not {alg[:40]!r}")
    _field(manifest, "signature.kid", str)
    _b64url_decode(_field(manifest, "signature.value", str), "manifest field 'signature.value'", 64)
    canonical_bytes(manifest)  # refuses values the canonical form cannot carry


CheckName = Literal["key", "signature", "text", "watermark"]
Status = Literal["pass", "fail", "skip"]
CHECK_ORDER: tuple[CheckName, ...] = ("key", "signature", "text", "watermark")
_PASSED = {
    "key": "signed by a trusted key",
    "signature": "signature valid",
    "text": "text unaltered",
    "watermark": "watermark detected",
}


@dataclass(frozen=True)
class Check:
    name: CheckName
    status: Status
    detail: str  # one line

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Verification:
    """Each check's outcome; `failed` names the first that failed (None: all passed or skipped)."""

    checks: tuple[Check, ...]
    manifest: dict[str, Any]

    @property
    def failed(self) -> CheckName | None:
        return next((c.name for c in self.checks if c.status == "fail"), None)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def message(self) -> str:
        """One line: what failed, or what was verified."""
        for c in self.checks:
            if c.status == "fail":
                return c.detail
        passed = [_PASSED[c.name] for c in self.checks if c.status == "pass"]
        return "verified: " + ", ".join(passed) if passed else "nothing could be checked"

    def check(self, name: CheckName) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def with_check(self, check: Check) -> Verification:
        """This verification with `check` added (or replacing one of the same name), in check order."""
        checks = [c for c in self.checks if c.name != check.name] + [check]
        return replace(self, checks=tuple(sorted(checks, key=lambda c: CHECK_ORDER.index(c.name))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "message": self.message,
            "checks": [c.to_dict() for c in self.checks],
            "manifest": {
                "id": self.manifest.get("id"),
                "kid": self.manifest.get("signature", {}).get("kid"),
                "created": self.manifest.get("created"),
            },
        }


def verify_manifest(
    text: str, manifest: Any, trusted_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> Verification:
    """Check `manifest` against `text`: well formed (else ProvenanceError), signed by a trusted key,
    signature valid, text unaltered.

    trusted_keys: kid -> public key (`read_public_keys`, `parse_public_keys`); None trusts this
    machine's own signing key only (and creates none).
    """
    if not isinstance(text, str):
        raise ProvenanceError(f"the text must be a string, not {type(text).__name__}")
    check_manifest(manifest)
    trusted = own_public_keys() if trusted_keys is None else dict(trusted_keys)
    kid = manifest["signature"]["kid"]
    shown_kid = kid if len(kid) <= 60 else kid[:57] + "..."
    checks: list[Check] = []
    public = trusted.get(kid)
    if public is None:
        known = ", ".join(sorted({key_id(k) for k in trusted.values()})) or "none"
        checks.append(
            Check("key", "fail", f"signed by an unknown key (kid {shown_kid}); trusted keys: {known}")
        )
        checks.append(Check("signature", "skip", "no trusted public key to check it with"))
    else:
        checks.append(Check("key", "pass", f"kid {shown_kid} is trusted"))
        signature = _b64url_decode(manifest["signature"]["value"], "signature.value", 64)
        try:
            public.verify(signature, canonical_bytes(manifest))
        except InvalidSignature:
            checks.append(
                Check(
                    "signature",
                    "fail",
                    "the signature does not match the manifest: forged or altered after signing",
                )
            )
        else:
            checks.append(Check("signature", "pass", f"{ALG} signature by {shown_kid} is valid"))
    try:
        actual = text_sha256(text)
    except UnicodeEncodeError:
        raise ProvenanceError("the text is not valid Unicode (a lone surrogate)") from None
    signed = manifest["text"]
    if actual == signed["sha256"]:
        checks.append(Check("text", "pass", f"sha256 {actual[:16]}... matches ({len(text)} characters)"))
    else:
        checks.append(
            Check(
                "text",
                "fail",
                f"the text was edited after signing, or the manifest is for another text (sha256 "
                f"{actual[:16]}..., {len(text)} characters; the manifest's: {signed['sha256'][:16]}..., "
                f"{signed['length']} characters)",
            )
        )
    return Verification(tuple(checks), dict(manifest))


# -- reading manifests ----------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that keep different copies of a duplicated key would read two different manifests
    # under one signature.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ProvenanceError(f"the manifest repeats the field {k[:40]!r}")
        out[k] = v
    return out


def parse_manifest_json(text: str, where: str = "the manifest") -> Any:
    """JSON from a manifest file, with duplicate keys refused (one-line ProvenanceError)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ProvenanceError(f"{where} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ProvenanceError(f"{where} is not valid JSON (nested too deep)") from None


def find_manifest(doc: Any, text: str | None = None) -> Any:
    """The manifest in `doc`: a manifest itself, or a response/result that carries one
    ({"provenance": ...} or {"hallmark": {"provenance": ...}}), or a list of manifests (one per
    choice; the one for `text` is picked by its hash, else the first)."""
    if isinstance(doc, dict) and "format" not in doc:
        if isinstance(doc.get("hallmark"), dict) and "provenance" in doc["hallmark"]:
            doc = doc["hallmark"]["provenance"]
        elif "provenance" in doc:
            doc = doc["provenance"]
    if isinstance(doc, list):
        if not doc:
            raise ProvenanceError("the manifest list is empty")
        if text is not None:
            sha = text_sha256(text)
            for m in doc:
                if isinstance(m, dict) and isinstance(m.get("text"), dict) and m["text"].get("sha256") == sha:
                    return m
        return doc[0]
    return doc
