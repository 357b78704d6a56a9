"""`hallmark finetune` (and `hallmark pretrain`): shape a model on your own data.

The training flags come from the typed configs in hallmark.train.config (TrainConfig,
LoraSettings), each with a HALLMARK_* variable. PyTorch is imported only when a command runs, so
`--help` stays fast and works without the train extra installed. With `--nproc-per-node N` the
command starts itself N times under torchrun (hallmark.train.launch).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from hallmark.cli.options import config_from_options, dataclass_options, envvar
from hallmark.errors import HallmarkError
from hallmark.train.config import LoraSettings, PretrainConfig, PretrainSettings, TrainConfig

MERGE_CHOICES = ("f16", "q8_0", "q4_k_m")


def _require_torch() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise HallmarkError(
            f"training needs PyTorch, transformers and peft ({e.name} is missing): "
            "pip install 'hallmark-llm[train]'"
        ) from None


def _start(options: dict[str, Any]) -> bool:
    """What both commands do first: check the train extra, re-launch as torchrun ranks for
    --nproc-per-node > 1 (this process then only waits for them); returns --json."""
    _require_torch()
    nproc = options.pop("nproc_per_node")
    if nproc > 1:
        relaunch_under_torchrun(nproc)
    return options.pop("as_json")


def nproc_option(f: Any) -> Any:
    return click.option(
        "--nproc-per-node",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        envvar=envvar("nproc_per_node"),
        show_envvar=True,
        help="Processes on this machine, started by torchrun (finetune: DDP; pretrain: FSDP2; gloo on "
        "CPUs, NCCL on GPUs).",
    )(f)


def relaunch_under_torchrun(nproc: int) -> None:
    """Run this very command again as `nproc` torchrun ranks, and exit with their status."""
    import os
    import subprocess

    if os.environ.get("WORLD_SIZE"):  # already a rank of a torchrun job
        return
    args = sys.argv[1:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "hallmark", *args]
    sys.exit(subprocess.call(cmd))


@click.command()
@click.argument("model")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training data, JSONL (chat, prompt/completion, text, or a translation/summarization/qa "
    "task file) or .txt; repeatable (all files must hold the same format).",
)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Held-out data of the same format, scored during training (loss; task metric on a sample).",
)
@click.option("--out", required=True, help="Name to register the tuned model under (see `hallmark models`).")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the adapter, checkpoints and loss curve go [default: the registry's folder for --out].",
)
@click.option("--style", default=None, help="Task prompt style for task files [default: zeroshot / tldr].")
@click.option("--from", "source_lang", default=None, help="Source language of translation data without one.")
@click.option("--to", "target_lang", default=None, help="Target language of translation data without one.")
@click.option(
    "--max-length",
    type=click.IntRange(min=8),
    default=1024,
    show_default=True,
    help="Longest example in tokens (a longer one is an error naming its line).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use the first N records of each file."
)
@click.option("--merge", type=click.Choice(MERGE_CHOICES), default=None, help="Also write a merged model.")
@click.option("--overwrite", is_flag=True, help="Replace a registered model of the same name.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@dataclass_options(TrainConfig)
@dataclass_options(LoraSettings)
@nproc_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def finetune(model: str, **options: Any) -> None:
    """Fine-tune MODEL with LoRA on your data; the result runs in hallmark under the name --out.

    Only the answer tokens are learned (the prompt is masked); task files are rendered with the
    same prompts `hallmark translate/summarize/ask` send. Progress shows loss and tokens/s; a
    checkpoint is written at each evaluation (--resume continues from it); the adapter is written
    as a llama.cpp LoRA GGUF, with the loss curve (loss.png) next to it.

    \b
    Examples:
      hallmark finetune gemma-3-270m --data pairs.en-fr.jsonl --out gemma-fr
      hallmark translate -m gemma-fr --to fr "Where is the station?"
      hallmark finetune smollm2 --data squad.jsonl --eval dev.jsonl --out smol-qa --epochs 2
      hallmark finetune smollm2 --data chats.jsonl --out smol-chat --resume
      hallmark finetune smollm2 --data chats.jsonl --out smol-chat --merge q8_0
      hallmark finetune smollm2 --data chats.jsonl --out smol-chat --nproc-per-node 2
    """
    as_json = _start(options)
    from hallmark.train.finetune import finetune as run_finetune

    config = config_from_options(TrainConfig, options)
    lora = config_from_options(LoraSettings, options)
    result = run_finetune(
        model,
        list(options.pop("data")),
        out=options.pop("out"),
        eval_data=options.pop("eval_data"),
        output_dir_=options.pop("output_dir"),
        style=options.pop("style"),
        source_lang=options.pop("source_lang"),
        target_lang=options.pop("target_lang"),
        max_length=options.pop("max_length"),
        limit=options.pop("limit"),
        merge=options.pop("merge"),
        overwrite=options.pop("overwrite"),
        n_threads=options.pop("threads"),
        lora=lora,
        config=config,
    )
    if result.adapter is None:  # not rank 0 of a torchrun job: rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    metrics = ", ".join(f"{k[5:]} {v}" for k, v in result.metrics.items())
    click.echo(f"registered {result.name}: {result.adapter}" + (f" ({metrics})" if metrics else ""))
    if result.merged:
        click.echo(f"merged model: {result.merged}")
    if result.loss_plot:
        click.echo(f"loss curve: {result.loss_plot}")
    click.echo(f"took {result.seconds:.0f} s; try: hallmark generate -m {result.name} ...")


@click.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, help="Name to register the new model under (see `hallmark models`).")
@dataclass_options(PretrainSettings)
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Held-out text, scored at each evaluation (loss on 32 blocks spread over it).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use the first N lines/records of DATA."
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the model, checkpoints and loss curve go [default: the registry's folder for --out].",
)
@click.option("--overwrite", is_flag=True, help="Replace a registered model of the same name.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@dataclass_options(PretrainConfig)
@nproc_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def pretrain(data: Path, **options: Any) -> None:
    """Train a small Llama model from scratch on the plain text in DATA; it runs under --out.

    DATA is a .txt file (one document or paragraph per line) or JSONL with a "text" field. The
    documents are tokenized with --tokenizer's vocabulary and packed into full blocks of --seq-len
    tokens; every weight is trained (FSDP2 across processes with --nproc-per-node or torchrun).
    The defaults are a smoke test of a few minutes on a 2-core CPU; real runs need more steps
    (--max-steps, or --max-steps 0 and --epochs) and GPUs. A checkpoint is written at each
    evaluation (--resume continues from it); the model is written as a GGUF, with loss.png.

    \b
    Examples:
      hallmark pretrain books.txt --out tiny-books
      hallmark generate -m tiny-books "Once upon a time"
      hallmark pretrain books.txt --eval valid.txt --out tiny-books --max-steps 2000 --resume
      hallmark pretrain books.txt --out small-books --size small --nproc-per-node 8
    """
    as_json = _start(options)
    from hallmark.train.pretrain import pretrain as run_pretrain

    settings = config_from_options(PretrainSettings, options)
    result = run_pretrain(
        data,
        out=options.pop("out"),
        **asdict(settings),
        eval_data=options.pop("eval_data"),
        limit=options.pop("limit"),
        output_dir_=options.pop("output_dir"),
        overwrite=options.pop("overwrite"),
        n_threads=options.pop("threads"),
        config=config_from_options(PretrainConfig, options),
    )
    if result.model is None:  # not rank 0 of a torchrun job: rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    metrics = ", ".join(f"{k} {v}" for k, v in result.metrics.items())
    click.echo(f"registered {result.name}: {result.model} ({result.parameters:,} parameters; {metrics})")
    if result.loss_plot:
        click.echo(f"loss curve: {result.loss_plot}")
    click.echo(f'took {result.seconds:.0f} s; try: hallmark generate -m {result.name} "Once upon a time"')
