import pytest

from hallmark import ModelFileError, UnknownModelError
from hallmark.catalog import CATALOG, DEFAULT_MODEL, find_entry, resolve
from hallmark.gguf_info import read_gguf_info


def test_names_and_aliases_resolve(smollm2_path, gemma_path):
    assert resolve("smollm2-135m-instruct").path == smollm2_path
    assert resolve("SmolLM2").path == smollm2_path
    assert resolve("gemma-3-270m").path == gemma_path
    assert find_entry(DEFAULT_MODEL).kind == "instruct"


def test_a_path_is_accepted_wherever_a_name_is(smollm2_path):
    r = resolve(str(smollm2_path))
    assert r.path == smollm2_path and r.entry is None


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownModelError) as excinfo:
        resolve("gpt-5")
    for entry in CATALOG:
        assert entry.name in str(excinfo.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        resolve(str(tmp_path / "nope.gguf"))


@pytest.mark.parametrize(
    ("name", "arch", "n_params", "ctx", "template", "quant"),
    [
        ("smollm2-135m-instruct", "llama", 134_515_008, 8192, True, "Q4_1"),
        ("gemma-3-270m", "gemma3", 268_098_176, 32768, False, "Q4_K_M"),
    ],
)
def test_gguf_info_of_shipped_models(name, arch, n_params, ctx, template, quant):
    info = read_gguf_info(resolve(name).path)
    assert info.architecture == arch
    assert info.parameters == n_params
    assert info.context_length == ctx
    assert info.has_chat_template is template
    assert info.quantization == quant
    assert info.file_size > 50_000_000
