"""Signed provenance manifests: signing and verifying, forged and edited manifests rejected and said
so, malformed ones refused one field at a time, the signing key created once (0600 in 0700) and never
overwritten, the model hash cached; and `hallmark verify` on a real smollm2 generation, watermark
detection included. Real keys, real files, real CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hallmark import provenance as prov
from hallmark.errors import HallmarkError
from hallmark.provenance import (
    FORMAT,
    ProvenanceError,
    SigningKey,
    build_manifest,
    canonical_bytes,
    find_manifest,
    key_id,
    model_sha256,
    parse_manifest_json,
    parse_public_keys,
    public_jwk,
    public_keys,
    read_public_keys,
    sign_manifest,
    signing_key,
    verify_manifest,
)
from tests.conftest import run_cli

TEXT = "The council voted 7 to 2 to extend the tram line to the harbour. Ünïcödé and emoji 🚋 too."
SHA = "ab" * 32


def _manifest(text: str = TEXT, **overrides) -> dict:
    args = {
        "text": text,
        "model": "smollm2-135m-instruct",
        "model_sha256": SHA,
        "watermark_spec_id": "hm1-gumbel-w2-k0e92caa512ae-tade6dc1a204a04a9",
        "watermark_applied": True,
        "policy_name": "default",
        "policy_sha256": "cd" * 32,
        "disclosure": "AI-generated text from the language model smollm2-135m-instruct.",
        "request_id": "chatcmpl-123",
    }
    return build_manifest(**{**args, **overrides})


def _stranger() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(private, key_id(private.public_key()), "", None)


def _one_line(e: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(e.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A config dir (and cache dir) of its own, no key in the environment."""
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HALLMARK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(prov.ENV_KEY, raising=False)
    return tmp_path / "config"


# -- signing and verifying ------------------------------------------------------------------------
def test_a_manifest_round_trips_and_states_what_it_signs(config):
    m = _manifest()
    assert m["format"] == FORMAT and m["id"].startswith("urn:uuid:") and m["created"].endswith("Z")
    assert m["generator"].startswith("hallmark/") and m["ai_generated"] is True
    assert m["model"] == {"name": "smollm2-135m-instruct", "sha256": SHA}
    assert m["watermark"] == {"spec_id": "hm1-gumbel-w2-k0e92caa512ae-tade6dc1a204a04a9", "applied": True}
    assert m["policy"] == {"name": "default", "sha256": "cd" * 32}
    assert m["text"] == {"sha256": hashlib.sha256(TEXT.encode()).hexdigest(), "length": len(TEXT)}
    assert m["signature"]["alg"] == "EdDSA" and m["signature"]["kid"] == signing_key().kid
    # JSON-ready, and verifies after a trip through JSON text.
    v = verify_manifest(TEXT, json.loads(json.dumps(m)))
    assert v.ok and v.failed is None
    assert [(c.name, c.status) for c in v.checks] == [
        ("key", "pass"),
        ("signature", "pass"),
        ("text", "pass"),
    ]
    assert v.message == "verified: signed by a trusted key, signature valid, text unaltered"


def test_the_signed_bytes_are_sorted_compact_json_without_the_signature(config):
    m = _manifest()
    payload = {k: v for k, v in m.items() if k != "signature"}
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_bytes(m) == expected
    # Anyone with the public key and any Ed25519 library can check it: here, cryptography alone.
    public = signing_key().public
    raw = prov._b64url_decode(m["signature"]["value"], "sig", 64)
    public.verify(raw, expected)  # raises if not


def test_an_edited_text_is_rejected_and_said_to_be_edited(config):
    m = _manifest()
    for edited in (TEXT.replace("7 to 2", "2 to 7"), TEXT + " ", TEXT[:-1], "something else entirely"):
        v = verify_manifest(edited, m)
        assert not v.ok and v.failed == "text"
        assert v.message.startswith("the text was edited after signing, or the manifest is for another text")
        assert "\n" not in v.message and f"{len(TEXT)} characters" in v.message
        assert v.check("signature").status == "pass"  # the manifest itself is genuine


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m["model"].update(name="gpt-4"),
        lambda m: m["text"].update(sha256=hashlib.sha256(b"a different text").hexdigest()),
        lambda m: m["watermark"].update(applied=False),
        lambda m: m.update(ai_generated=False),
        lambda m: m.update(created="2020-01-01T00:00:00Z"),
        lambda m: m.update(extra="a field added after signing"),
        lambda m: m.pop("request_id") and m.update(request_id=None),
    ],
)
def test_a_forged_manifest_is_rejected_as_forged(config, tamper):
    # Payload altered, signature kept.
    m = _manifest()
    tamper(m)
    text = TEXT if m["text"]["sha256"] == hashlib.sha256(TEXT.encode()).hexdigest() else "a different text"
    v = verify_manifest(text, m)
    assert not v.ok and v.failed == "signature"
    assert v.message == "the signature does not match the manifest: forged or altered after signing"


def test_a_manifest_signed_by_another_key_is_rejected(config):
    mine = signing_key()
    stranger = _stranger()
    # Signed by a stranger who claims to be me: the signature does not verify under my key.
    impostor = sign_manifest(_manifest(), stranger)
    impostor["signature"]["kid"] = mine.kid
    v = verify_manifest(TEXT, impostor)
    assert v.failed == "signature" and "forged" in v.message
    # Signed by a stranger under the stranger's own kid: an unknown key.
    foreign = sign_manifest(_manifest(), stranger)
    v = verify_manifest(TEXT, foreign)
    assert v.failed == "key" and v.check("signature").status == "skip"
    assert v.message.startswith(f"signed by an unknown key (kid {stranger.kid})") and mine.kid in v.message
    # ...which verifies once the stranger's public key is trusted, and then mine is not.
    trusted = parse_public_keys({"keys": [public_jwk(stranger.public)]})
    assert verify_manifest(TEXT, foreign, trusted).ok
    assert verify_manifest(TEXT, _manifest(), trusted).failed == "key"


def test_verifying_offline_with_the_published_jwks_or_a_pem(config, tmp_path):
    m = _manifest()
    jwks = public_keys()
    assert jwks["keys"][0] | {"x": "..."} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": signing_key().kid,
        "x": "...",
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    (tmp_path / "jwk.json").write_text(json.dumps(jwks["keys"][0]))
    pem = signing_key().public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(pem)
    for name in ("jwks.json", "jwk.json", "key.pem"):
        trusted = read_public_keys(tmp_path / name)
        assert verify_manifest(TEXT, m, trusted).ok, name
    # The JWKS holds no secret.
    assert "d" not in jwks["keys"][0]


def _payload() -> dict:
    """An unsigned manifest, as build_manifest would make it."""
    return {
        "format": FORMAT,
        "id": "urn:uuid:00000000-0000-4000-8000-000000000000",
        "created": "2026-05-09T12:00:00Z",
        "generator": "hallmark/0.1.0",
        "request_id": None,
        "ai_generated": True,
        "disclosure": "AI-generated.",
        "model": {"name": "m", "sha256": SHA},
        "watermark": {"spec_id": None, "applied": False},
        "policy": {"name": None, "sha256": None},
        "text": {"sha256": prov.text_sha256(TEXT), "length": len(TEXT)},
    }


def test_without_a_key_on_this_machine_nothing_is_trusted_and_no_key_is_created(config):
    v = verify_manifest(TEXT, sign_manifest(_payload(), _stranger()))
    assert v.failed == "key" and "trusted keys: none" in v.message
    assert not (config / "provenance").exists()


# -- malformed manifests --------------------------------------------------------------------------
_DELETE = object()


def _set(m: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        m = m[part]
    if value is _DELETE:
        del m[last]
    else:
        m[last] = value


@pytest.mark.parametrize(
    "field",
    [
        "format",
        "id",
        "created",
        "generator",
        "request_id",
        "ai_generated",
        "disclosure",
        "model",
        "model.name",
        "model.sha256",
        "watermark",
        "watermark.spec_id",
        "watermark.applied",
        "policy.name",
        "policy.sha256",
        "text",
        "text.sha256",
        "text.length",
        "signature",
        "signature.alg",
        "signature.kid",
        "signature.value",
    ],
)
def test_a_missing_field_is_named_in_one_line(config, field):
    m = _manifest()
    _set(m, field, _DELETE)
    with pytest.raises(ProvenanceError) as e:
        verify_manifest(TEXT, m)
    # A missing object is named when one of its fields is looked up: 'model' for 'model.name'.
    _one_line(e, "the manifest has no", f"'{field}")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("format", 1, "'format' must be a string, not a number"),
        ("format", "hallmark-provenance/9", "unsupported manifest format 'hallmark-provenance/9'"),
        ("id", None, "'id' must be a string, not null"),
        ("created", "yesterday", "'created' is not an RFC 3339 time"),
        ("request_id", 5, "'request_id' must be a string or null, not a number"),
        ("ai_generated", "yes", "'ai_generated' must be true or false, not a string"),
        ("model", "smollm2", "'model' must be an object"),
        ("model.sha256", "abc", "'model.sha256' must be 64 lowercase hex digits"),
        ("watermark.applied", 1, "'watermark.applied' must be true or false, not a number"),
        ("policy.sha256", "ZZ" * 32, "'policy.sha256' must be 64 lowercase hex digits"),
        ("text.sha256", ["x"], "'text.sha256' must be a string, not a list"),
        ("text.length", True, "'text.length' must be an integer, not a boolean"),
        ("text.length", -1, "'text.length' must not be negative"),
        ("signature.alg", "RS256", "'signature.alg' must be 'EdDSA', not 'RS256'"),
        ("signature.value", "not base64!", "'signature.value' is not base64url"),
        ("signature.value", "AAAA", "'signature.value' must decode to 64 bytes, not 3"),
        ("disclosure", 1.5, "'disclosure' must be a string, not a number"),
        ("extra", 1.5, "'extra' is a fraction"),
    ],
)
def test_an_ill_typed_field_is_named_in_one_line(config, field, value, fragment):
    m = _manifest()
    _set(m, field, value)
    with pytest.raises(ProvenanceError) as e:
        verify_manifest(TEXT, m)
    _one_line(e, fragment)
    assert isinstance(e.value, HallmarkError)


@pytest.mark.parametrize("doc", [None, [], "a manifest", 3])
def test_a_manifest_that_is_not_an_object_is_refused(config, doc):
    with pytest.raises(ProvenanceError, match="a manifest must be a JSON object"):
        verify_manifest(TEXT, doc)


def test_manifest_json_with_a_repeated_field_is_refused():
    # Parsers that keep different copies of a repeated key would read two manifests under one signature.
    with pytest.raises(ProvenanceError) as e:
        parse_manifest_json('{"format": "x", "text": {}, "text": {}}')
    _one_line(e, "repeats the field 'text'")
    with pytest.raises(ProvenanceError) as e:
        parse_manifest_json('{"format": ', "the manifest m.json")
    _one_line(e, "the manifest m.json is not valid JSON")


def test_the_manifest_is_found_in_a_response_or_a_list_of_choices(config):
    a, b = _manifest("first choice"), _manifest("second choice")
    assert find_manifest({"id": "chatcmpl-1", "hallmark": {"provenance": a}}) == a
    assert find_manifest({"text": "first choice", "provenance": a}) == a
    assert find_manifest([a, b], "second choice") == b
    assert find_manifest(a) == a


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"text": b"bytes"}, "text must be a str"),
        ({"model_sha256": "abc"}, "model_sha256 must be 64 lowercase hex digits"),
        ({"watermark_applied": "yes"}, "watermark_applied must be a bool"),
        ({"watermark_spec_id": None}, "watermark_applied is True but watermark_spec_id is None"),
        ({"policy_sha256": None}, "policy_name and policy_sha256 must both be given"),
        ({"request_id": 5}, "request_id must be a str or None"),
        ({"created": "today"}, "created must be a datetime or Unix seconds"),
    ],
)
def test_bad_input_to_build_manifest_is_one_line(config, kwargs, fragment):
    with pytest.raises(ProvenanceError) as e:
        _manifest(**kwargs)
    _one_line(e, fragment)


def test_created_may_be_given(config):
    from datetime import UTC, datetime

    assert _manifest(created=0)["created"] == "1970-01-01T00:00:00Z"
    assert _manifest(created=datetime(2026, 5, 9, 12, tzinfo=UTC))["created"] == "2026-05-09T12:00:00Z"


# -- the signing key ------------------------------------------------------------------------------
def _forget_loaded_keys(monkeypatch) -> None:
    monkeypatch.setattr(prov, "_KEYS", {})  # as a new process would start


def test_the_key_is_created_once_owner_only_and_announced(config, capsys, monkeypatch):
    key = signing_key()
    path = config / "provenance" / "ed25519.json"
    assert key.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"created your provenance signing key {key.kid} at {path}" in err
    record = json.loads(path.read_text())
    assert record["kty"] == "OKP" and record["crv"] == "Ed25519" and record["kid"] == key.kid
    assert record["created"] == key.created and len(record["d"]) == 43
    # No temporary file left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["ed25519.json"]
    # A new process reads the same key and says nothing.
    _forget_loaded_keys(monkeypatch)
    again = signing_key()
    assert again.kid == key.kid and capsys.readouterr().err == ""


def test_an_existing_key_is_never_overwritten(config, monkeypatch):
    key = signing_key()
    before = key.path.read_bytes()
    with pytest.raises(FileExistsError):
        prov._create_key_file(key.path)
    assert key.path.read_bytes() == before
    # Two processes racing to create it: the loser uses the winner's key.
    _forget_loaded_keys(monkeypatch)
    real_read = prov._read_key_file
    calls = []

    def absent_at_first(path):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(path)
        return real_read(path)

    monkeypatch.setattr(prov, "_read_key_file", absent_at_first)
    assert signing_key().kid == key.kid and key.path.read_bytes() == before


def test_an_existing_directory_keeps_its_mode(config):
    (config / "provenance").mkdir(parents=True, mode=0o755)
    os.chmod(config / "provenance", 0o755)
    signing_key()
    assert stat.S_IMODE((config / "provenance").stat().st_mode) == 0o755


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not json", "is corrupt: it is not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"kty": "RSA"}', "is not an Ed25519 key"),
        ('{"kty": "OKP", "crv": "Ed25519"}', "has no private key: 'd' must be a base64url string"),
        ('{"kty": "OKP", "crv": "Ed25519", "d": "AAAA"}', "'d' must decode to 32 bytes, not 3"),
    ],
)
def test_a_corrupt_key_file_is_refused_naming_the_file(config, content, fragment):
    path = config / "provenance" / "ed25519.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ProvenanceError) as e:
        signing_key()
    _one_line(e, str(path), fragment)
    assert path.read_text() == content  # refused, never replaced


def test_a_key_file_whose_public_half_was_changed_is_refused(config, monkeypatch):
    path = signing_key().path
    record = json.loads(path.read_text())
    record["x"] = public_jwk(_stranger().public)["x"]
    path.write_text(json.dumps(record))
    _forget_loaded_keys(monkeypatch)
    with pytest.raises(ProvenanceError) as e:
        signing_key()
    _one_line(e, str(path), "'x' is not the public key of 'd'")


def test_the_key_may_come_from_the_environment_in_three_forms(config, monkeypatch):
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    seed = private.private_bytes_raw()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    jwk = json.dumps({**public_jwk(private.public_key()), "d": prov._b64url(seed)})
    for value in (seed.hex(), jwk, pem):
        monkeypatch.setenv(prov.ENV_KEY, value)
        key = signing_key()
        assert key.kid == kid and key.path is None and key.source == "$HALLMARK_PROVENANCE_KEY"
        assert verify_manifest(TEXT, _manifest()).ok
    assert not (config / "provenance").exists()  # the environment's key is never written down
    monkeypatch.setenv(prov.ENV_KEY, "too short")
    with pytest.raises(ProvenanceError) as e:
        signing_key()
    _one_line(e, "$HALLMARK_PROVENANCE_KEY must be 64 hex digits")


def test_signing_is_cheap_and_thread_safe(config):
    signing_key()
    start = time.perf_counter()
    for _ in range(200):
        _manifest()
    assert (time.perf_counter() - start) / 200 < 1e-3

    results: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        for j in range(25):
            text = f"text {i} {j}"
            m = _manifest(text)
            with lock:
                results.append((text, m))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and len({m["id"] for _, m in results}) == 200
    assert all(verify_manifest(text, m).ok for text, m in results)


# -- the model hash -------------------------------------------------------------------------------
def test_model_sha256_is_hashlibs_and_cached(config, tmp_path, monkeypatch):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(os.urandom(3 << 20))
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert model_sha256(model) == expected
    cache = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert cache[str(model.resolve())]["sha256"] == expected
    # A new process finds it in the cache file without reading the model.
    monkeypatch.setattr(prov, "_HASHES", {})
    monkeypatch.setattr(prov, "_hash_file", lambda p: pytest.fail("hashed again"))
    assert model_sha256(str(model)) == expected
    monkeypatch.undo()


def test_model_sha256_hashes_again_when_the_file_changes(config, tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"one")
    first = model_sha256(model)
    model.write_bytes(b"two")
    os.utime(model, ns=(1, 1))
    assert model_sha256(model) == hashlib.sha256(b"two").hexdigest() != first


def test_model_sha256_uses_the_catalogs_verified_stamp(config, tmp_path, monkeypatch):
    model = tmp_path / "assembled.gguf"
    model.write_bytes(b"weights")
    st = model.stat()
    claimed = "ef" * 32  # what the catalog checked when it assembled the file
    (tmp_path / "assembled.gguf.verified").write_text(f"{claimed} {st.st_size} {st.st_mtime_ns}\n")
    monkeypatch.setattr(prov, "_hash_file", lambda p: pytest.fail("hashed despite the stamp"))
    assert model_sha256(model) == claimed


def test_model_sha256_of_a_missing_file_is_one_line(config, tmp_path):
    with pytest.raises(ProvenanceError) as e:
        model_sha256(tmp_path / "nope.gguf")
    _one_line(e, "cannot hash the model file", "nope.gguf")


def test_an_unwritable_cache_is_ignored(config, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache dir should be")
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"weights")
    assert model_sha256(model) == hashlib.sha256(b"weights").hexdigest()


# -- `hallmark verify` on a real generation -------------------------------------------------------
@pytest.fixture(scope="module")
def generation(smollm2, smollm2_path):
    """A watermarked smollm2 generation, and its manifest signed with the session's key."""
    result = smollm2.generate(
        "Breaking news: the city council voted", temperature=1.0, max_tokens=120, ignore_eos=True, seed=11
    )
    assert result.watermark.applied and result.watermark.spec_id and len(result.text) > 200
    manifest = build_manifest(
        text=result.text,
        model=smollm2.name,
        model_sha256=model_sha256(smollm2_path),
        watermark_spec_id=result.watermark.spec_id,
        watermark_applied=True,
        policy_name=None,
        policy_sha256=None,
        disclosure="AI-generated text from the language model smollm2-135m-instruct.",
    )
    return result, manifest


def _files(tmp_path: Path, text: str, manifest) -> tuple[str, str]:
    (tmp_path / "story.txt").write_text(text, encoding="utf-8")
    (tmp_path / "story.json").write_text(json.dumps(manifest) if not isinstance(manifest, str) else manifest)
    return str(tmp_path / "story.txt"), str(tmp_path / "story.json")


def test_verify_passes_on_a_real_generation_with_its_watermark(generation, smollm2_path, tmp_path):
    result, manifest = generation
    assert manifest["model"]["sha256"] == hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    text_file, manifest_file = _files(tmp_path, result.text + "\n", manifest)  # as `generate >` writes
    proc = run_cli("verify", text_file, "--manifest", manifest_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert first == "verified: signed by a trusted key, signature valid, text unaltered, watermark detected"
    assert any(line.split()[:2] == ["watermark", "pass"] for line in rest), proc.stdout
    # JSON, from stdin, with the public key given explicitly (as a stranger would verify).
    jwks = run_cli("provenance", "key", "--json")
    assert jwks.returncode == 0 and json.loads(jwks.stdout) == public_keys()
    (tmp_path / "jwks.json").write_text(jwks.stdout)
    args = ["-", "--manifest", manifest_file, "--key", str(tmp_path / "jwks.json"), "--json"]
    proc = run_cli("verify", *args, stdin=result.text)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"] and out["exit_code"] == 0
    assert [c["status"] for c in out["checks"]] == ["pass"] * 4
    assert out["detection"]["verdict"] == "watermarked" and out["detection"]["p_value"] < 1e-3


def test_verify_says_which_check_failed_with_its_exit_code(generation, tmp_path):
    result, manifest = generation
    words = result.text.split(" ")
    edited = " ".join(words[:5] + ["definitely"] + words[6:])

    proc = run_cli(
        "verify", _files(tmp_path, edited, manifest)[0], "--manifest", str(tmp_path / "story.json")
    )
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILED: the text was edited after signing")
    # The edit left most of the watermark: detection still finds it, which is worth saying.
    assert any(line.split()[:2] == ["watermark", "pass"] for line in proc.stdout.splitlines()), proc.stdout

    forged = copy.deepcopy(manifest)
    forged["model"]["name"] = "a-bigger-model"
    proc = run_cli("verify", *_flags(_files(tmp_path, result.text, forged)))
    assert proc.returncode == 3 and proc.stdout.startswith(
        "FAILED: the signature does not match the manifest: forged or altered after signing"
    ), proc.stdout

    foreign = sign_manifest(manifest, _stranger())
    proc = run_cli("verify", *_flags(_files(tmp_path, result.text, foreign)))
    assert proc.returncode == 4 and proc.stdout.startswith("FAILED: signed by an unknown key"), proc.stdout

    # Someone else's key given with --key: my own manifest is then from an unknown key.
    (tmp_path / "other.json").write_text(json.dumps({"keys": [public_jwk(_stranger().public)]}))
    proc = run_cli(
        "verify", *_flags(_files(tmp_path, result.text, manifest)), "--key", str(tmp_path / "other.json")
    )
    assert proc.returncode == 4, proc.stdout


def _flags(files: tuple[str, str]) -> list[str]:
    return [files[0], "--manifest", files[1]]


def _one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_verify_bad_input_is_one_line(generation, tmp_path):
    result, manifest = generation
    missing = copy.deepcopy(manifest)
    del missing["text"]["sha256"]
    proc = run_cli("verify", *_flags(_files(tmp_path, result.text, missing)))
    _one_line_error(proc, "story.json: the manifest has no 'text.sha256' field")

    proc = run_cli("verify", *_flags(_files(tmp_path, result.text, "{not json")))
    _one_line_error(proc, "story.json is not valid JSON")

    proc = run_cli("verify", str(tmp_path / "absent.txt"), "--manifest", str(tmp_path / "story.json"))
    _one_line_error(proc, "cannot read the text", "absent.txt")

    (tmp_path / "bad-key.json").write_text('{"kty": "RSA", "n": "..."}')
    proc = run_cli(
        "verify", *_flags(_files(tmp_path, result.text, manifest)), "--key", str(tmp_path / "bad-key.json")
    )
    _one_line_error(proc, "bad-key.json is not an Ed25519 key")

    # A manifest for another text: a failed check (exit 5), said in one line.
    other = build_manifest(**{**_args_of(manifest), "text": "a different generation"})
    proc = run_cli("verify", *_flags(_files(tmp_path, result.text, other)), "--no-watermark")
    assert proc.returncode == 5
    assert proc.stdout.splitlines()[0].startswith(
        "FAILED: the text was edited after signing, or the manifest is for another text"
    )


def _args_of(manifest: dict) -> dict:
    return {
        "model": manifest["model"]["name"],
        "model_sha256": manifest["model"]["sha256"],
        "watermark_spec_id": manifest["watermark"]["spec_id"],
        "watermark_applied": manifest["watermark"]["applied"],
        "policy_name": manifest["policy"]["name"],
        "policy_sha256": manifest["policy"]["sha256"],
        "disclosure": manifest["disclosure"],
    }


def test_verify_without_the_watermark_key_skips_that_check(generation, tmp_path):
    # A stranger has the public key but not the watermark's secret: three checks pass, one is skipped.
    result, manifest = generation
    (tmp_path / "jwks.json").write_text(json.dumps(public_keys()))
    args = [*_flags(_files(tmp_path, result.text, manifest)), "--key", str(tmp_path / "jwks.json"), "--json"]
    proc = run_cli("verify", *args, env={"HALLMARK_CONFIG_DIR": str(tmp_path / "empty-config")})
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"], proc.stdout + proc.stderr
    watermark = out["checks"][-1]
    assert watermark["name"] == "watermark" and watermark["status"] == "skip"
    assert watermark["detail"].startswith("not tested:")
