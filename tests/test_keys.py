"""The watermark key store: key files are checked when read, created owner-only, and every failure
to read or create one is a one-line WatermarkKeyError, never a traceback. Real files, real CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hallmark.errors import WatermarkKeyError
from hallmark.watermark.keys import default_key, find_key, keys_dir, list_keys, new_key
from tests.conftest import run_cli

STRONG = "ab" * 16  # 16 bytes, hex: the weakest secret a key file may hold


def _one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty key store of its own; $HALLMARK_WATERMARK_KEY unset."""
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("HALLMARK_WATERMARK_KEY", raising=False)
    return tmp_path / "config" / "keys"


def _write_key_file(store, name: str, content: str):
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = store / f"{name}.json"
    path.write_text(content)
    path.chmod(0o600)
    return path


# -- weak and corrupt key files -------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["", "ab", "ab" * 15])
def test_a_key_file_with_an_empty_or_weak_secret_is_refused(store, secret):
    # Before the fix an empty secret was accepted: output labelled watermarked under a key anyone
    # can reproduce. The same minimum as $HALLMARK_WATERMARK_KEY (16 bytes) now applies.
    path = _write_key_file(store, "default", json.dumps({"name": "default", "secret": secret}))
    with pytest.raises(WatermarkKeyError, match="at least 16 bytes") as e:
        default_key()
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(WatermarkKeyError, match="at least 16 bytes"):
        find_key("default")


def test_a_key_file_with_a_strong_enough_secret_is_read(store):
    _write_key_file(store, "default", json.dumps({"name": "default", "secret": STRONG, "created": "x"}))
    key = default_key()
    assert key.secret == bytes.fromhex(STRONG) and key.name == "default" and key.created == "x"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "not a JSON object"),
        ('{"secret": 5}', "'secret'"),
        ('{"secret": "zz"}', "'secret'"),
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"name": "default"}', "'secret'"),
        (json.dumps({"secret": STRONG}), "'name'"),
        (json.dumps({"name": 5, "secret": STRONG}), "'name'"),
        (json.dumps({"name": "default", "secret": STRONG, "created": 7}), "'created'"),
        (json.dumps({"name": "default", "secret": STRONG, "key_id": "000000000000"}), "key_id"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_a_corrupt_key_file_is_a_one_line_error_naming_the_file(store, content, message):
    # Before the fix `[]` gave a TypeError (a traceback in the CLI) and the others a bare KeyError text.
    path = _write_key_file(store, "default", content)
    for read in (default_key, lambda: find_key("default"), list_keys):
        with pytest.raises(WatermarkKeyError) as e:
            read()
        text = str(e.value)
        assert str(path) in text and message in text and "\n" not in text, text
        assert len(text) < 400, text


def test_keys_list_with_a_corrupt_file_is_one_line_naming_it(store):
    new_key("good")
    bad = _write_key_file(store, "broken", "[]")
    env = {"HALLMARK_CONFIG_DIR": str(store.parent)}
    _one_line_error(run_cli("keys", "list", env=env), str(bad), "not a JSON object")
    _one_line_error(run_cli("keys", "show", "good", env=env), str(bad))
    bad.unlink()
    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0 and "good" in listed.stdout


# -- where keys are created --------------------------------------------------------------------------
def test_key_files_are_0600_in_a_0700_directory(store):
    key = new_key("alpha")
    assert key.path == store / "alpha.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    created = default_key()  # the first watermarked generation's path
    assert created.name == "default" and stat.S_IMODE(created.path.stat().st_mode) == 0o600


def test_an_existing_key_directory_keeps_the_mode_its_owner_gave_it(store):
    store.mkdir(parents=True, mode=0o755)
    store.chmod(0o755)  # whatever the umask: the user's own choice, not hallmark's to change
    key = new_key("alpha")
    assert stat.S_IMODE(store.stat().st_mode) == 0o755
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600


def test_a_config_dir_under_a_regular_file_is_a_one_line_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HALLMARK_CONFIG_DIR", str(blocker / "sub"))
    monkeypatch.delenv("HALLMARK_WATERMARK_KEY", raising=False)
    with pytest.raises(WatermarkKeyError, match="cannot create the key directory .*: Not a directory"):
        default_key()
    assert list_keys() == []  # nothing stored there: not an error until a key must be written
    with pytest.raises(WatermarkKeyError, match="no watermark key 'x'"):
        find_key("x")


@pytest.mark.parametrize(
    ("command", "store"),
    [
        (["generate", "hi", "--max-tokens", "2", "--temperature", "1", "--ctx-size", "512"], "keys"),
        (["keys", "new"], "keys"),
        # The server makes its provenance signing key first, at startup (its public key is served).
        (["serve", "--port", "0", "--no-log", "--ctx-size", "512", "--parallel", "1"], "provenance"),
    ],
)
def test_cli_with_a_config_dir_under_a_regular_file_is_a_one_line_error(tmp_path, command, store):
    # Before the fix: a NotADirectoryError traceback from mkdir (generate and serve create the
    # default key on the first watermarked generation / at startup).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli(*command, env={"HALLMARK_CONFIG_DIR": str(blocker / "sub")}, timeout=300)
    _one_line_error(proc, "key directory", str(blocker / "sub" / store), "Not a directory")


def test_an_unwritable_config_dir_is_a_one_line_error():
    # Root writes anywhere, so the check runs in a child that drops to `nobody` once Python is up.
    base = Path(tempfile.mkdtemp(prefix="hallmark-test-unwritable-"))
    try:
        base.chmod(0o755)
        (base / "config").mkdir(mode=0o555)
        (base / "config").chmod(0o555)
        code = (
            "import os\n"
            "from hallmark.errors import WatermarkKeyError\n"
            "from hallmark.watermark.keys import default_key\n"
            "if os.geteuid() == 0:\n"
            "    os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    default_key()\n"
            "except WatermarkKeyError as e:\n"
            "    print('WatermarkKeyError:', e)\n"
        )
        env = {**os.environ, "HALLMARK_CONFIG_DIR": str(base / "config")}
        env.pop("HALLMARK_WATERMARK_KEY", None)
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
        )
        keys = base / "config" / "keys"
        assert proc.stderr == ""
        expected = f"WatermarkKeyError: cannot create the key directory {keys}: Permission denied"
        assert proc.stdout.strip() == expected
    finally:
        (base / "config").chmod(0o700)
        shutil.rmtree(base)


def test_an_unreadable_key_file_is_a_one_line_error(store):
    path = _write_key_file(store, "default", json.dumps({"name": "default", "secret": STRONG}))
    path.unlink()
    path.mkdir()  # a directory where the key file should be: EISDIR, even for root
    with pytest.raises(WatermarkKeyError, match=f"cannot read the watermark key file {path}"):
        default_key()


# -- what an unknown key reveals -----------------------------------------------------------------
def test_find_key_without_reveal_names_neither_the_store_nor_the_keys(store):
    newsroom = new_key("newsroom")
    with pytest.raises(WatermarkKeyError) as revealed:
        find_key("0e92caa512ae")
    assert str(keys_dir()) in str(revealed.value) and "newsroom" in str(revealed.value)  # the CLI's help
    with pytest.raises(WatermarkKeyError) as hidden:
        find_key("0e92caa512ae", reveal=False)
    text = str(hidden.value)
    assert "0e92caa512ae" in text and str(store) not in text and "newsroom" not in text
    # Only the exact id: a name or a prefix would let a client probe for key names and ids.
    assert find_key(newsroom.key_id, reveal=False) == newsroom
    for probe in ("newsroom", newsroom.key_id[:8]):
        with pytest.raises(WatermarkKeyError) as hidden:
            find_key(probe, reveal=False)
        assert str(store) not in str(hidden.value) and newsroom.key_id not in str(hidden.value)
    _write_key_file(store, "broken", "[]")
    with pytest.raises(WatermarkKeyError) as hidden:
        find_key(newsroom.key_id, reveal=False)
    assert str(store) not in str(hidden.value) and "broken" not in str(hidden.value)
    with pytest.raises(WatermarkKeyError, match="broken.json"):
        find_key(newsroom.key_id)  # the CLI names the file to fix
