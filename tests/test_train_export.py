"""GGUF exports of PyTorch models run in llama.cpp as they ran in PyTorch (real llama.cpp, no mocks).

Tiny random models (hidden size 64, the shipped models' vocabularies so that their tokenizers copy)
are exported whole, as a LoRA adapter on that export, and merged with the adapter; llama.cpp's
logits for the same token ids are compared with PyTorch's (float32). A LoRA on the real SmolLM2
(llama architecture, with the query/key row permutation) must change llama.cpp's logits the way it
changes PyTorch's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import peft
import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from hallmark.backends import (
    BackendConfig,
    SequenceInput,
    adapter_set,
    open_backend,
    quantize_gguf,
    read_header,
)
from hallmark.errors import ModelFileError
from hallmark.train.export import (
    gguf_tensor_name,
    lora_weights,
    write_full_model,
    write_lora_adapter,
    write_merged_model,
)

PROMPT = "The quick brown fox jumps over the lazy dog near the river bank"
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# F16 weights against PyTorch's float32, on logits of standard deviation ~0.8: measured max |diff|
# 0.004-0.005 for llama and 0.009-0.022 for gemma3 (6 layers; the merged adapter the largest), from
# rounding the weights (and llama.cpp's F16 activations in its F16 matrix products). The mistakes
# this guards against cost 0.5 or more (measured: no q/k permutation 1.9, gemma norms without +1
# 3.9, no rope scaling 0.52, no final logit softcapping 0.87).
F16_TOLERANCE = 0.05


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,  # SmolLM2's tokenizer
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        tie_word_embeddings=False,  # an 'output' tensor (SmolLM2 itself ties them)
        # Larger than the default 0.02 so that the logits spread (std ~0.8) and errors show.
        initializer_range=0.1,
    )
    return LlamaForCausalLM(config).eval()


def _tiny_gemma3() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=262144,  # gemma-3's tokenizer
        hidden_size=64,
        intermediate_size=96,
        # 6 layers: the 6th is llama.cpp's (fixed) full-attention layer, with the global rope theta.
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,  # llama.cpp scales attention by 1/sqrt(head_dim)
        sliding_window=512,
        max_position_embeddings=1024,
        rope_parameters={  # the linear scaling of gemma-3 4B and larger, on the global layers
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
        final_logit_softcapping=5.0,  # low enough to bend these logits (they reach ±4)
        initializer_range=0.1,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # gemma initialises its norms at 0 (x * (1 + 0)): random ones test the +1
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.normal_(0.0, 0.3)
    return model


@dataclass
class Tiny:
    arch: str
    model: torch.nn.Module  # never wrapped by peft (copies are)
    gguf: Path  # its F16 export
    tokens: list[int]
    logits: np.ndarray  # PyTorch's, one row per token


def _torch_logits(model: torch.nn.Module, tokens: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def _llama_logits(path: Path, tokens: list[int], adapter: Path | None = None) -> np.ndarray:
    backend = open_backend(path, BackendConfig(n_ctx=64))
    try:
        if adapter is not None:
            backend.set_adapters(0, adapter_set({backend.load_adapter(str(adapter)): 1.0}))
        (rows,) = backend.decode([SequenceInput(0, tokens, all_logits=True)])
        return rows.copy()
    finally:
        backend.close()


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def tiny(request, tmp_path_factory, smollm2_path, gemma_path) -> Tiny:
    model, tokenizer = (
        (_tiny_llama(), smollm2_path) if request.param == "llama" else (_tiny_gemma3(), gemma_path)
    )
    path = write_full_model(
        model, tokenizer_gguf=tokenizer, out=tmp_path_factory.mktemp("tiny") / "model.gguf"
    )
    backend = open_backend(path, BackendConfig(n_ctx=64))
    try:
        tokens = backend.tokenize(PROMPT)
    finally:
        backend.close()
    return Tiny(request.param, model, path, tokens, _torch_logits(model, tokens))


def _with_lora(model: torch.nn.Module, seed: int = 1) -> peft.PeftModel:
    """A copy of `model` with a rank-4 LoRA on every linear layer, B random (peft starts it at 0)."""
    torch.manual_seed(seed)
    tuned = peft.get_peft_model(
        copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=LINEAR, lora_dropout=0.0)
    )
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.2)
    return tuned.eval()


def test_tensor_names_are_llama_cpps():
    assert gguf_tensor_name("model.layers.3.self_attn.q_proj") == "blk.3.attn_q"
    assert gguf_tensor_name("model.layers.0.mlp.down_proj") == "blk.0.ffn_down"
    assert gguf_tensor_name("model.embed_tokens") == "token_embd"
    assert gguf_tensor_name("lm_head") == "output"
    # The one name whose meaning differs between the two architectures.
    assert gguf_tensor_name("model.layers.1.post_attention_layernorm") == "blk.1.ffn_norm"
    assert (
        gguf_tensor_name("model.layers.1.post_attention_layernorm", "gemma3") == "blk.1.post_attention_norm"
    )
    assert gguf_tensor_name("model.layers.1.pre_feedforward_layernorm", "gemma3") == "blk.1.ffn_norm"
    # The same as gguf-py's own map, for every module the exports write.
    for arch, name_map in (("llama", gguf.MODEL_ARCH.LLAMA), ("gemma3", gguf.MODEL_ARCH.GEMMA3)):
        model = _tiny_llama() if arch == "llama" else _tiny_gemma3()
        tensor_map = gguf.get_tensor_name_map(name_map, model.config.num_hidden_layers)
        for name, _ in model.named_parameters():
            module = name.removesuffix(".weight")
            assert gguf_tensor_name(module, arch) == tensor_map.get_name(module), module
    with pytest.raises(ValueError, match="model.layers.0.mlp.experts"):
        gguf_tensor_name("model.layers.0.mlp.experts")


def test_a_full_model_runs_in_llama_cpp_as_in_pytorch(tiny):
    logits = _llama_logits(tiny.gguf, tiny.tokens)
    np.testing.assert_allclose(logits, tiny.logits, atol=F16_TOLERANCE, rtol=0)


def test_a_lora_adapter_runs_in_llama_cpp_as_in_peft(tiny, tmp_path):
    tuned = _with_lora(tiny.model)
    expected = _torch_logits(tuned, tiny.tokens)
    # The adapter changes the logits by far more than the tolerance, so a wrong export fails.
    assert np.abs(expected - tiny.logits).max() > 30 * F16_TOLERANCE
    weights, alpha, rank = lora_weights(tuned)
    assert (alpha, rank) == (8.0, 4) and len(weights) == len(LINEAR) * tuned.config.num_hidden_layers
    adapter = write_lora_adapter(
        weights, alpha=alpha, base_gguf=tiny.gguf, out=tmp_path / "adapter.gguf", metadata={"hallmark.x": "y"}
    )
    fields = gguf.GGUFReader(adapter).fields
    assert fields["general.type"].contents() == "adapter" and fields["hallmark.x"].contents() == "y"
    logits = _llama_logits(tiny.gguf, tiny.tokens, adapter)
    np.testing.assert_allclose(logits, expected, atol=F16_TOLERANCE, rtol=0)
    assert list(tmp_path.iterdir()) == [adapter]  # no temporary file left behind


def _relative_error(logits: np.ndarray, expected: np.ndarray) -> float:
    """Root mean square difference, in units of the expected logits' standard deviation."""
    return float(np.sqrt(np.mean((logits - expected) ** 2)) / expected.std())


def test_a_merged_model_runs_in_llama_cpp_as_in_peft(tiny, tmp_path):
    tuned = _with_lora(tiny.model)
    expected = _torch_logits(tuned, tiny.tokens)
    weights, alpha, rank = lora_weights(tuned)
    merged = write_merged_model(
        tiny.gguf, weights, alpha=alpha, rank=rank, out=tmp_path / "f16.gguf", quant="f16", progress=False
    )
    np.testing.assert_allclose(_llama_logits(merged, tiny.tokens), expected, atol=F16_TOLERANCE, rtol=0)
    if tiny.arch != "llama":
        return  # quantising depends on nothing gemma-specific; the llama case covers it in half the time
    # Quantised by llama.cpp, the logits move further from PyTorch's: measured relative RMS errors
    # 0.024 (q8_0) and 0.17 (q4_k_m), against 0.88 for leaving the adapter out. This model's rows are
    # 64 and 160 wide, not multiples of 256, so every q4_k_m tensor takes llama.cpp's fallback type
    # (the real SmolLM2, 576 wide, and gemma-3-270m, 640, merge to q4_k_m as well: checked by hand,
    # gemma's result has the very tensor types and size of the shipped gemma-3-270m Q4_K_M file).
    assert _relative_error(tiny.logits, expected) > 0.8
    for quant, file_type, bound in (("q8_0", "7", 0.06), ("q4_k_m", "15", 0.35)):
        merged = write_merged_model(
            tiny.gguf,
            weights,
            alpha=alpha,
            rank=rank,
            out=tmp_path / f"{quant}.gguf",
            quant=quant,
            progress=False,
        )
        assert read_header(merged).metadata["general.file_type"] == file_type
        assert _relative_error(_llama_logits(merged, tiny.tokens), expected) < bound
    # Written atomically: the F16 intermediates and temporary files are gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16.gguf", "q4_k_m.gguf", "q8_0.gguf"]


@pytest.fixture(scope="module")
def smollm2_torch(smollm2_path):
    """SmolLM2 in PyTorch: transformers dequantises the same Q4_1 weights llama.cpp runs (~15 s)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    ).eval()


def test_a_lora_on_the_real_smollm2_changes_llama_cpp_as_it_changes_pytorch(
    smollm2_torch, smollm2_path, tmp_path
):
    backend = open_backend(smollm2_path, BackendConfig(n_ctx=64))
    tokens = backend.tokenize("The capital of France is")
    backend.close()
    without_torch = _torch_logits(smollm2_torch, tokens)
    # Query and key only, the two llama.cpp stores permuted, on two layers.
    torch.manual_seed(2)
    tuned = peft.get_peft_model(
        smollm2_torch,
        peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"], layers_to_transform=[0, 1]),
    )
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 3.0)
    delta_torch = _torch_logits(tuned, tokens) - without_torch
    weights, alpha, _ = lora_weights(tuned)
    adapter = write_lora_adapter(weights, alpha=alpha, base_gguf=smollm2_path, out=tmp_path / "smol.gguf")
    delta_llama = _llama_logits(smollm2_path, tokens, adapter) - _llama_logits(smollm2_path, tokens)
    # The Q4_1 base computes with 8-bit activations, so its logits carry noise of RMS ~0.25 (they
    # correlate 0.9992 with PyTorch's), which any change of weights draws anew; the deltas are compared
    # by correlation. Measured: 0.984 (0.15 with the permutation of B left out).
    assert np.corrcoef(delta_llama.ravel(), delta_torch.ravel())[0, 1] > 0.95


def test_what_llama_cpp_cannot_run_is_refused(smollm2_path, tmp_path):
    tied = {"lm_head": (torch.zeros(4, 576), torch.zeros(49152, 4))}  # SmolLM2 ties its embeddings
    with pytest.raises(ValueError, match="no tensor output.weight"):
        write_lora_adapter(tied, alpha=8, base_gguf=smollm2_path, out=tmp_path / "a.gguf")
    wrong = {"model.layers.0.self_attn.k_proj": (torch.zeros(4, 576), torch.zeros(576, 4))}  # k is 192
    with pytest.raises(ValueError, match="do not fit"):
        write_lora_adapter(wrong, alpha=8, base_gguf=smollm2_path, out=tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="unknown quantisation"):
        write_merged_model(smollm2_path, {}, alpha=8, rank=4, out=tmp_path / "m.gguf", quant="q3_k")
    # gemma3's default query_pre_attn_scalar (256) with another head size: llama.cpp would scale wrongly.
    config = Gemma3TextConfig(vocab_size=300, hidden_size=64, num_hidden_layers=1, head_dim=32)
    with pytest.raises(ValueError, match="query_pre_attn_scalar"):
        write_full_model(Gemma3ForCausalLM(config), tokenizer_gguf=smollm2_path, out=tmp_path / "g.gguf")
    assert list(tmp_path.iterdir()) == []


def test_lora_weights_reads_peft_scaling_and_refuses_what_a_lora_file_cannot_hold():
    def lora(**options) -> peft.PeftModel:
        return peft.get_peft_model(_tiny_llama(), peft.LoraConfig(r=4, target_modules=["q_proj"], **options))

    weights, alpha, rank = lora_weights(lora(lora_alpha=8))
    assert set(weights) == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}
    assert weights["model.layers.0.self_attn.q_proj"][0].shape == (4, 64) and (alpha, rank) == (8.0, 4)
    # rsLoRA scales by alpha / sqrt(rank); llama.cpp by alpha / rank: the alpha written makes them equal.
    assert lora_weights(lora(lora_alpha=8, use_rslora=True))[1:] == (16.0, 4)
    with pytest.raises(ValueError, match="DoRA"):
        lora_weights(lora(use_dora=True))
    with pytest.raises(ValueError, match="modules_to_save"):
        lora_weights(lora(modules_to_save=["lm_head"]))


def test_a_file_llama_cpp_cannot_quantise_is_a_model_file_error(smollm2_path, tmp_path):
    q = {"model.layers.0.self_attn.q_proj": (torch.zeros(4, 576), torch.zeros(576, 4))}
    adapter = write_lora_adapter(q, alpha=8, base_gguf=smollm2_path, out=tmp_path / "adapter.gguf")
    with pytest.raises(ModelFileError, match="could not quantise"):
        quantize_gguf(adapter, tmp_path / "q8.gguf", "q8_0")  # an adapter is not a model
