"""The registry of fine-tuned models: entries on disk (private, atomic), shipped entries, and a
registered name working wherever a model name does (resolve, load, the CLI)."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest

import hallmark
from hallmark import registry
from hallmark.catalog import resolve
from hallmark.errors import ModelFileError, UnknownModelError
from hallmark.registry import RegistryEntry, RegistryError
from tests.conftest import TEST_CTX, run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA_SHA = "ab" * 32


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty registry of this test's own (subprocesses inherit it)."""
    monkeypatch.setenv("HALLMARK_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """An empty shipped folder in place of hallmark/adapters (this process only)."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    (folder / "index.json").write_text("[]\n")
    monkeypatch.setattr(registry, "SHIPPED_DIR", folder)
    monkeypatch.setattr(registry, "SHIPPED_INDEX", folder / "index.json")
    return folder


def _entry(name: str, adapter: Path, **kw) -> RegistryEntry:
    return RegistryEntry(name=name, base="smollm2", adapter=str(adapter), data_sha256=DATA_SHA, **kw)


def test_register_find_list_and_remove(data_dir, shipped, smollm2_lora):
    stored = registry.register(
        _entry("tuned", smollm2_lora, task="translation", style="zeroshot", recipe={"epochs": 2})
    )
    assert stored.base == "smollm2-135m-instruct"  # an alias is stored as the catalog name
    assert stored.adapter == str(smollm2_lora.resolve()) and stored.kind == "lora"
    assert stored.created.endswith("Z")
    assert registry.find("tuned") == stored
    assert registry.find("nothing") is None and registry.find("./x.gguf") is None
    assert [e.name for e in registry.entries()] == ["tuned"]
    path = data_dir / "models" / "tuned.json"
    assert json.loads(path.read_text())["recipe"] == {"epochs": 2}
    # Private: the entry 0600, its folder 0700; no temporary file left behind.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["tuned.json"]
    registry.remove("tuned")
    assert registry.find("tuned") is None and registry.entries() == []
    with pytest.raises(UnknownModelError, match="no registered model named 'tuned'"):
        registry.remove("tuned")


def test_register_refuses_catalog_names_duplicates_and_missing_files(
    data_dir, shipped, smollm2_lora, tmp_path
):
    for name in ("smollm2-135m-instruct", "gemma3", "SmolLM2"):
        with pytest.raises(RegistryError, match="built-in model"):
            registry.register(_entry(name, smollm2_lora))
    for name in ("../evil", ".hidden", "a b", "x.gguf", ""):
        with pytest.raises(RegistryError, match="invalid model name"):
            registry.register(_entry(name, smollm2_lora))
    with pytest.raises(ModelFileError, match="adapter file of tuned does not exist"):
        registry.register(_entry("tuned", tmp_path / "nope.gguf"))
    with pytest.raises(ModelFileError, match="neither a catalog name nor a file"):
        registry.register(RegistryEntry(name="tuned", base="gpt-5", adapter=str(smollm2_lora)))
    with pytest.raises(RegistryError, match="needs an 'adapter' or a 'merged' file"):
        registry.register(RegistryEntry(name="tuned", base="smollm2"))
    first = registry.register(_entry("tuned", smollm2_lora, task="qa"))
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(_entry("tuned", smollm2_lora, task="translation"))
    assert registry.find("tuned") == first
    replaced = registry.register(_entry("tuned", smollm2_lora, task="translation"), overwrite=True)
    assert registry.find("tuned") == replaced and replaced.task == "translation"


def test_a_malformed_entry_is_a_one_line_error_naming_its_file(data_dir, shipped, smollm2_lora):
    registry.register(_entry("tuned", smollm2_lora))
    path = data_dir / "models" / "tuned.json"
    for content, message in (
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"name": "tuned"}), "has no 'base'"),
        (json.dumps({"name": "other", "base": "smollm2", "adapter": "a.gguf"}), "named 'other'"),
        (json.dumps({"name": "tuned", "base": "smollm2", "adapter": 3}), "'adapter' must be a string"),
    ):
        path.write_text(content)
        with pytest.raises(RegistryError, match=message) as excinfo:
            registry.find("tuned")
        assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    proc = run_cli("generate", "-m", "tuned", "hi")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith(f"error: {path}: 'adapter' must be a string") and proc.stderr.count("\n") == 1
    )
    registry.remove("tuned")  # a broken entry can still be removed
    assert not path.exists()


def test_shipped_entries_resolve_beside_the_index_and_user_entries_win(
    data_dir, shipped, smollm2_lora, smollm2_path
):
    copy = shipped / "shipped-tuned.gguf"
    copy.write_bytes(smollm2_lora.read_bytes())
    (shipped / "index.json").write_text(
        json.dumps([{"name": "tuned", "base": "smollm2-135m-instruct", "adapter": "shipped-tuned.gguf"}])
    )
    entry = registry.find("tuned")
    assert entry.source == "shipped" and entry.adapter == str(copy)
    r = resolve("tuned")
    assert (r.name, r.path, r.adapters, r.entry.name) == (
        "tuned",
        smollm2_path,
        (copy,),
        "smollm2-135m-instruct",
    )
    with pytest.raises(RegistryError, match="ships with hallmark"):
        registry.remove("tuned")
    mine = registry.register(_entry("tuned", smollm2_lora))
    assert registry.find("tuned") == mine and resolve("tuned").adapters == (smollm2_lora.resolve(),)
    assert [(e.name, e.source) for e in registry.entries()] == [("tuned", "user")]


def test_the_package_ships_an_index_and_its_adapters():
    assert json.loads((ROOT / "src/hallmark/adapters/index.json").read_text()) is not None
    assert registry.shipped_entries() == [] or all(
        Path(e.adapter).is_file() for e in registry.shipped_entries()
    )
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"adapters/index.json", "adapters/*.gguf"} <= set(data["hallmark"])


def test_resolve_looks_at_the_catalog_first_then_the_registry(data_dir, shipped, smollm2_lora, tmp_path):
    # A hand-written entry with a catalog name is never used: catalog names cannot be shadowed.
    (data_dir / "models").mkdir(parents=True)
    (data_dir / "models" / "gemma3.json").write_text(
        json.dumps({"name": "gemma3", "base": "smollm2", "adapter": str(smollm2_lora)})
    )
    assert resolve("gemma3").name == "gemma-3-270m" and resolve("gemma3").adapters == ()
    merged = tmp_path / "merged.gguf"
    merged.write_bytes(b"GGUF")
    registry.register(RegistryEntry(name="merged-one", base="smollm2", merged=str(merged)))
    r = resolve("merged-one")
    assert (r.path, r.adapters, r.registry.kind) == (merged.resolve(), (), "merged")
    merged.unlink()
    with pytest.raises(ModelFileError, match="merged model file of merged-one is missing"):
        resolve("merged-one")
    with pytest.raises(UnknownModelError, match="a registered model"):
        resolve("no-such-model")


def test_a_registered_name_loads_the_base_with_its_adapter(data_dir, shipped, smollm2_lora, smollm2_path):
    registry.register(_entry("tuned", smollm2_lora, task="qa"))
    prompt = dict(temperature=0, max_tokens=12)
    with hallmark.load("tuned", n_ctx=TEST_CTX, show_progress=False, policy="off") as tuned:
        assert tuned.name == "tuned" and tuned.base_name == "smollm2-135m-instruct"
        assert tuned.registry.task == "qa" and [a.path for a in tuned.adapters] == [smollm2_lora.resolve()]
        by_name = tuned.generate("The capital of France is", **prompt)
    with hallmark.load(smollm2_path, n_ctx=TEST_CTX, lora=smollm2_lora, show_progress=False) as direct:
        by_path = direct.generate("The capital of France is", **prompt)
    assert by_name.text == by_path.text and by_name.provenance["model"]["name"] == "tuned"
    assert by_name.provenance["model"]["adapters"] == by_path.provenance["model"]["adapters"]


def test_models_lists_registered_models_and_removes_them(data_dir, shipped, smollm2_lora):
    registry.register(_entry("tuned", smollm2_lora, task="translation", style="zeroshot"))
    rows = {r["name"]: r for r in json.loads(run_cli("models", "--json").stdout)}
    assert rows["smollm2-135m-instruct"]["kind"] == "instruct"
    tuned = rows["tuned"]
    assert (tuned["kind"], tuned["base"], tuned["data_sha256"], tuned["task"], tuned["source"]) == (
        "lora",
        "smollm2-135m-instruct",
        DATA_SHA,
        "translation",
        "user",
    )
    table = run_cli("models").stdout
    line = next(line for line in table.splitlines() if line.startswith("tuned "))
    assert "lora" in line and DATA_SHA[:12] in line and "translation (zeroshot)" in line
    generated = run_cli(
        "generate", "-m", "tuned", "Hello", "--max-tokens", "4", "--json", "--ctx-size", "256"
    )
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["model"] == "tuned"
    proc = run_cli("models", "rm", "tuned")
    assert proc.returncode == 0 and "removed tuned" in proc.stdout and smollm2_lora.exists()
    assert "tuned" not in {r["name"] for r in json.loads(run_cli("models", "--json").stdout)}
    missing = run_cli("models", "rm", "tuned")
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "error: no registered model named 'tuned' (see `hallmark models`)"
    )
