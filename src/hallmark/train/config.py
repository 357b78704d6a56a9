"""Training settings as typed dataclasses; `hallmark finetune` and `hallmark pretrain` derive their
flags (and HALLMARK_* variables) from these fields, so each default is written once, here.

Importing this module is cheap (no torch): `hallmark --help` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hallmark.settings import setting

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    epochs: float = setting(1.0, min=0.01, help="Passes over the training data.")
    max_steps: int | None = setting(
        None, min=1, help="Stop after this many optimizer steps (overrides --epochs)."
    )
    batch_size: int = setting(16, min=1, help="Sequences per optimizer step, over all processes.")
    micro_batch_size: int = setting(
        8, min=1, help="Sequences per forward/backward pass in one process (memory vs speed)."
    )
    lr: float = setting(2e-4, flag="--learning-rate", min=0, help="Peak learning rate (AdamW).")
    warmup_ratio: float = setting(0.05, min=0, max=1, help="Share of the steps spent warming up.")
    min_lr_ratio: float = setting(0.1, min=0, max=1, help="The cosine schedule ends at lr x this.")
    weight_decay: float = setting(0.0, min=0, help="AdamW weight decay.")
    max_grad_norm: float = setting(1.0, min=0, help="Clip the gradient norm to this (0 = off).")
    seed: int = setting(0, help="Seed for initialisation and data order (runs are reproducible).")
    eval_every: int = setting(
        0, min=0, help="Steps between evaluations and checkpoints [default: about 5 per run]."
    )
    resume: bool = setting(False, help="Continue from the last checkpoint of the same run.")
    bf16: bool = setting(
        False, help="Compute in bfloat16 (on by itself where the CPU or GPU has bfloat16 arithmetic)."
    )


@dataclass
class LoraSettings:
    rank: int = setting(16, flag="--lora-rank", min=1, max=1024, help="LoRA rank.")
    alpha: float = setting(32.0, flag="--lora-alpha", min=0, help="LoRA alpha (scale = alpha / rank).")
    dropout: float = setting(0.0, flag="--lora-dropout", min=0, max=0.9, help="Dropout on LoRA inputs.")
    targets: tuple[str, ...] = setting(
        LORA_TARGETS,
        flag="--lora-target",
        multiple=True,
        metavar="MODULE",
        help="Projection layers that get LoRA (repeatable) [default: all attention and MLP ones].",
    )


@dataclass
class PretrainConfig(TrainConfig):
    """TrainConfig with pretraining's defaults (`hallmark pretrain`): the higher peak learning rate,
    longer warm-up and weight decay that small models trained from scratch use, and a fixed number
    of steps sized as a smoke test on 2 CPU cores (hallmark.train.pretrain states its time and loss).
    `--max-steps 0` goes by `--epochs` instead."""

    max_steps: int | None = setting(
        80, min=0, help="Optimizer steps (a CPU smoke test by default); 0 = go by --epochs."
    )
    batch_size: int = setting(8, min=1, help="Sequences per optimizer step, over all processes.")
    lr: float = setting(2e-3, flag="--learning-rate", min=0, help="Peak learning rate (AdamW).")
    warmup_ratio: float = setting(0.1, min=0, max=1, help="Share of the steps spent warming up.")
    weight_decay: float = setting(0.1, min=0, help="AdamW weight decay.")


@dataclass(frozen=True)
class ModelShape:
    """A Llama model's shape: hidden size, decoder layers, attention and key/value heads, FFN size."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int

    def config(self, vocab_size: int, seq_len: int, **extra: Any) -> Any:
        """The transformers LlamaConfig of this shape (tied embeddings, context `seq_len`)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.ffn,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=seq_len,  # the context it is trained for; llama.cpp's n_ctx
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            **extra,
        )


# The model sizes `hallmark pretrain --size` builds (their parameter counts: hallmark.train.pretrain).
SIZES: dict[str, ModelShape] = {
    "micro": ModelShape(hidden=64, layers=2, heads=2, kv_heads=1, ffn=256),
    "tiny": ModelShape(hidden=256, layers=4, heads=4, kv_heads=2, ffn=768),
    "small": ModelShape(hidden=512, layers=8, heads=8, kv_heads=4, ffn=1536),
}


@dataclass
class PretrainSettings:
    """What `hallmark pretrain` builds: the model's size, vocabulary, context and GGUF type."""

    size: str = setting(
        "tiny",
        choices=tuple(SIZES),
        help="Model size (hidden/layers/heads: micro 64/2/2 for tests, tiny 256/4/4, small 512/8/8).",
    )
    tokenizer: str = setting(
        "smollm2-135m-instruct",
        help="Model whose vocabulary and tokenizer the new model uses (a catalog name or GGUF path).",
    )
    seq_len: int = setting(128, min=8, help="Tokens per training block; also the new model's context.")
    quant: str = setting(
        "q8_0",
        choices=("f16", "q8_0", "q4_k_m"),
        help="GGUF type of the written model (K-quants need --size tiny or larger).",
    )
