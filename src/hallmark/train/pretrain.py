"""`hallmark pretrain`: a small Llama-architecture model trained from scratch, run back in the engine.

    pretrain("gutenberg_en.train.txt", out="tiny-gutenberg")   # -> PretrainResult
    hallmark generate -m tiny-gutenberg "Once upon a time"

1. The vocabulary is an existing model's (default SmolLM2's 49,152-token BPE): its GGUF tokenizes
   the data with llama.cpp, the tokenizer serving uses, and its `tokenizer.*` keys are copied into
   the written GGUF (hallmark.train.export.write_full_model), so no tokenizer is trained or converted.
2. Data is plain text: a .txt file (one document or paragraph per non-blank line) or JSONL records
   with a `text` field. Documents are packed as pretraining corpora are: their tokens joined with
   the end-of-sequence token after each, cut into blocks of exactly `seq_len` tokens (the remainder
   is dropped); every token of a block is learned except its first, which has no context in it.
3. A transformers `LlamaForCausalLM` is built from a seeded initialisation (the same on every rank)
   and trained in full by hallmark.train.loop. Under torchrun its decoder layers and then the whole
   loss module are sharded with FSDP2 (`fully_shard`); NCCL on GPUs, gloo on CPUs.
4. Rank 0 writes the GGUF (quantised by llama.cpp), the loss curve, and registers the model under
   `out` (hallmark.registry: `base` = the tokenizer's model, `merged` = the GGUF), so the name works
   wherever a model name does.

Sizes (hidden sizes are multiples of 256 so that llama.cpp's K-quants apply to every matrix, except
`micro`, which is for tests; parameters counted with the 49,152-token vocabulary and tied input
and output embeddings, which are most of the weights at these sizes):

| size  | hidden | layers | heads | kv heads | head dim | ffn  | parameters |
|-------|--------|--------|-------|----------|----------|------|------------|
| micro | 64     | 2      | 2     | 1        | 32       | 256  | 3.3 M      |
| tiny  | 256    | 4      | 4     | 2        | 64       | 768  | 15.7 M     |
| small | 512    | 8      | 8     | 4        | 64       | 1536 | 50.3 M     |

Cost: the 49,152-row output layer dominates (75 of tiny's ~94 MFLOP per trained token), so on 2
CPU cores tiny trains at a few hundred tokens/s (bfloat16 autocast, on where the CPU has it: 270
against 190 tokens/s in float32). The defaults (tiny, blocks of 128 tokens, 8 per step, 80 steps:
82k tokens) are a smoke test. Measured on the 6 MB Gutenberg file
(/work/shared/data/finetune/pretrain/gutenberg_en.train.txt, 1.44M tokens; --eval its .valid.txt)
on a 2-core machine shared with another training job: 6 min 42 s in all (tokenizing, 80 steps at
~240 tokens/s, evaluations, the q8_0 GGUF), training loss 10.84 -> 6.71, held-out loss 6.92 (a
uniform guess is ln 49152 = 10.80); the text it generates is frequent words, not yet sentences.
Real runs belong on GPUs, with the same code under torchrun (docs/finetune.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hallmark.backends import open_tokenizer
from hallmark.catalog import resolve
from hallmark.errors import HallmarkError
from hallmark.provenance import model_sha256
from hallmark.registry import RegistryEntry, check_name, find, models_dir, register
from hallmark.train.config import SIZES, PretrainConfig, PretrainSettings, TrainConfig
from hallmark.train.data import DataError, Example, file_sha256, read_records
from hallmark.train.distributed import Dist, has_bf16
from hallmark.train.export import QUANT_TYPES, write_full_model
from hallmark.train.loop import TrainLoop, plot_history, result_dict, run_settings

DEFAULTS = PretrainSettings()
EVAL_BLOCKS = 32  # held-out blocks scored at each evaluation, spread over the eval file


@dataclass
class PretrainResult:
    name: str
    out_dir: Path
    model: Path | None  # the GGUF (None on ranks other than 0)
    loss_plot: Path | None
    parameters: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    train_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


# -- data -------------------------------------------------------------------------------------


def read_documents(path: str | os.PathLike[str], limit: int | None = None) -> list[tuple[int, str]]:
    """(line, text) of the first `limit` records of a .txt or JSONL file of `text` records."""
    documents = []
    for line, record in read_records(path)[:limit]:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataError(
                f"{path}:{line}: pretraining reads plain text: a .txt file, or JSONL records with a "
                "non-empty 'text' string"
            )
        documents.append((line, text))
    return documents


def pack(documents: Sequence[tuple[int, list[int]]], eos: int, seq_len: int) -> list[Example]:
    """Documents' tokens joined with `eos` after each and cut into blocks of exactly `seq_len` (the
    remainder dropped); each block learns every token but its first. A block's `line` is that of
    the document it starts in."""
    stream: list[int] = []
    starts: list[int] = []  # where each document begins in the stream
    for _, ids in documents:
        starts.append(len(stream))
        stream += ids
        stream.append(eos)
    learn = [False] + [True] * (seq_len - 1)
    blocks = []
    for start in range(0, len(stream) - seq_len + 1, seq_len):
        line = documents[bisect_right(starts, start) - 1][0]
        blocks.append(Example(stream[start : start + seq_len], list(learn), line))
    return blocks


def tokenized_blocks(
    path: str | os.PathLike[str], tokenizer: Any, seq_len: int, limit: int | None = None
) -> list[Example]:
    """A text file as packed blocks of token ids (see `pack`)."""
    documents = [
        (line, tokenizer.tokenize(text, add_special=True)) for line, text in read_documents(path, limit)
    ]
    return pack(documents, tokenizer.eos_token, seq_len)


def spread(blocks: list[Example], n: int) -> list[Example]:
    """`n` blocks evenly spaced over the list (all of them when there are no more than `n`)."""
    if len(blocks) <= n:
        return blocks
    return [blocks[i * len(blocks) // n] for i in range(n)]


# -- sharding ---------------------------------------------------------------------------------


def fsdp2_wrap(dist: Dist) -> Any:
    """The TrainLoop `wrap` that shards a Llama loss module with FSDP2 over all ranks.

    Each decoder layer is its own FSDP unit (its weights are gathered just before it runs and freed
    after), then the loss module is the root: it holds the embeddings, final norm and the output
    layer, which `CausalLMLoss` calls directly (`get_decoder()`, `get_output_embeddings()`) rather
    than through the model's forward; sharding the module whose forward runs makes FSDP2's hooks
    gather those weights first. The tied output layer and input embeddings are one parameter, in
    one unit, so they stay tied.
    """

    def wrap(loss: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(dist.device.split(":")[0], (dist.world_size,))
        for layer in loss.decoder.layers:  # type: ignore[union-attr]
            fully_shard(layer, mesh=mesh)
        fully_shard(loss, mesh=mesh)
        return loss

    return wrap


# -- the run ----------------------------------------------------------------------------------


def pretrain(
    data: str | os.PathLike[str],
    *,
    out: str,
    size: str = DEFAULTS.size,
    tokenizer: str = DEFAULTS.tokenizer,
    config: TrainConfig | None = None,
    seq_len: int = DEFAULTS.seq_len,
    limit: int | None = None,
    quant: str = DEFAULTS.quant,
    eval_data: str | os.PathLike[str] | None = None,
    output_dir_: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    n_threads: int | None = None,
    show_progress: bool = True,
) -> PretrainResult:
    """Train a `size` Llama model from scratch on the text in `data` (its first `limit` records) and
    register it as `out`; `tokenizer` names the model whose vocabulary it uses.

    `config` defaults to PretrainConfig() (a CPU smoke test); `config.resume` continues the last
    run of the same name, data and settings from its checkpoint. `eval_data` (text too) is scored
    at each evaluation on EVAL_BLOCKS blocks. `quant` is the GGUF's type ("f16", "q8_0", "q4_k_m";
    K-quants need hidden sizes that are multiples of 256, so not with `micro`).
    """
    config = config or PretrainConfig()
    check_name(out)
    if size not in SIZES:
        raise HallmarkError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    if quant not in QUANT_TYPES:
        raise HallmarkError(f"unknown quantisation {quant!r}; known: {', '.join(QUANT_TYPES)}")
    if seq_len < 8:
        raise HallmarkError(f"--seq-len {seq_len} is too short (at least 8)")
    existing = find(out)
    if existing is not None and existing.source == "user" and not (overwrite or config.resume):
        raise HallmarkError(f"a model named {out!r} is registered already; pass --overwrite or another --out")
    dist = Dist.from_env()
    # torchrun starts one process per rank on the same cores: each takes its share of them.
    per_rank = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n_threads or per_rank)
    config.bf16 = config.bf16 or has_bf16(dist.device)  # 1.4x the float32 tokens/s for tiny on 2 cores
    out_dir = Path(output_dir_) if output_dir_ else models_dir() / out
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    source = resolve(tokenizer, show_progress=show_progress and dist.is_main)
    vocab = open_tokenizer(source.path)
    examples = tokenized_blocks(data, vocab, seq_len, limit)
    if len(examples) < max(2, dist.world_size):
        raise DataError(f"{data} holds too little text: {len(examples)} blocks of {seq_len} tokens")
    eval_examples = spread(tokenized_blocks(eval_data, vocab, seq_len), EVAL_BLOCKS) if eval_data else []
    if eval_data and not eval_examples:
        raise DataError(f"{eval_data} holds less text than one block of {seq_len} tokens")

    shape = SIZES[size]
    data_sha = file_sha256(data)
    settings = run_settings(config)
    run_id = hashlib.sha256(
        json.dumps([model_sha256(source.path), data_sha, asdict(shape), settings, seq_len, limit]).encode()
    ).hexdigest()

    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)  # the same initial weights on every rank
    llama_config = shape.config(vocab.n_vocab, seq_len)
    lm = LlamaForCausalLM(llama_config).to(dist.device)
    parameters = sum(p.numel() for p in lm.parameters())
    loop = TrainLoop(
        lm,
        examples,
        config,
        out_dir,
        dist=dist,
        wrap=fsdp2_wrap(dist),
        run_id=run_id,
        show_progress=show_progress,
    )

    def evaluate(step: int) -> dict[str, float]:
        return {"eval_loss": round(loop.eval_loss(eval_examples), 5)} if eval_examples else {}

    loop.evaluate = evaluate
    history = loop.run()
    weights = loop.trainable_state()  # sharded: gathered to rank 0 (every rank takes part)
    result = PretrainResult(out, out_dir, None, None, parameters, history)
    result.train_tokens = sum(len(e.ids) for e in examples)
    if dist.is_main:
        gguf_path = out_dir / f"model-{quant}.gguf"
        meta = {"general.name": out, "hallmark.tokenizer.source": source.name}
        meta["hallmark.data.sha256"] = data_sha
        result.model = _export(llama_config, weights, source.path, gguf_path, quant, meta)
        title = f"{out}: {size} Llama from scratch, {vocab.n_vocab} tokens"
        result.loss_plot = plot_history(history, out_dir / "loss.png", title)
        result.metrics = {k: v for k, v in history[-1].items() if k == "loss" or k.startswith("eval_")}
        result.seconds = round(time.perf_counter() - t0, 1)
        recipe = {
            "pretrain": str(data),
            "eval": str(eval_data) if eval_data else None,
            "size": size,
            "shape": asdict(shape),
            "tokenizer": source.name,
            "seq_len": seq_len,
            "limit": limit,
            "quant": quant,
            "train": settings,
            "processes": dist.world_size,
        }
        register(
            RegistryEntry(
                name=out,
                base=source.name if source.entry else str(source.path),
                merged=str(result.model),
                data_sha256=data_sha,
                recipe=recipe,
                metrics={**result.metrics, "parameters": parameters, "seconds": result.seconds},
            ),
            overwrite=True,
        )
        (out_dir / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    dist.barrier()
    dist.close()
    return result


def _export(
    llama_config: Any,
    weights: dict[str, torch.Tensor],
    tokenizer_gguf: Path,
    out: Path,
    quant: str,
    metadata: dict[str, str],
) -> Path:
    """The trained weights as a GGUF, through a fresh unsharded model on the CPU."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(llama_config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:  # the output layer is the tied embeddings
        raise AssertionError(f"weights do not fit the model: {missing} {unexpected}")  # a bug
    return write_full_model(
        model, tokenizer_gguf=tokenizer_gguf, out=out, quant=quant, metadata=metadata, chat_template=False
    )
