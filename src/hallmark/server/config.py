"""The server's configuration: one typed dataclass; `hallmark serve`'s flags are derived from it.

Each field's default and help are written here once; the CLI turns every field but `models` into
a flag with a HALLMARK_* environment variable (see hallmark.settings). Importing this module must
stay cheap: `hallmark --help` reads it.

`lora` serves LoRA adapters of the served models under names of their own, on the same loaded
weights and engine thread as their base (hallmark.server.app.load_state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hallmark.settings import setting
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES


@dataclass
class ServerConfig:
    # Catalog names, registered names or .gguf paths; empty = the default model.
    models: list[str] = field(default_factory=list)
    lora: tuple[str, ...] = setting(
        (),
        multiple=True,
        env="serve_lora",
        metavar="[NAME=]PATH[:SCALE]",
        help="Also serve this LoRA adapter GGUF of a served model as NAME [default: the file's stem], "
        "sharing the base's weights and batch (repeatable).",
    )
    host: str = setting("127.0.0.1", help="Address to listen on.")
    port: int = setting(8000, help="Port to listen on.", min=0, max=65535)
    api_keys: tuple[str, ...] = setting(
        (), flag="--api-key", multiple=True, help="Require this key as a Bearer token (repeatable)."
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        flag="--allowed-host",
        multiple=True,
        metavar="NAME",
        help="Without an API key, also answer requests addressed to this host name (repeatable); "
        "localhost and IP addresses always are.",
    )
    max_body_size: int = setting(
        8 << 20, min=1024, metavar="BYTES", help="Largest request body accepted; larger ones get 413."
    )
    n_ctx: int | None = setting(4096, flag="--ctx-size", min=8, help="Context window per sequence.")
    max_sequences: int = setting(
        8, flag="--parallel", min=1, max=256, help="Sequences per model decoded together (KV-cache slots)."
    )
    max_waiting: int = setting(
        64,
        flag="--max-queue",
        min=0,
        help="Sequences that may wait for a slot; beyond that requests get 503.",
    )
    prefill_chunk: int = setting(
        512, min=1, help="Most prompt tokens prefilled per step (keeps other streams flowing)."
    )
    prefix_cache: bool = setting(
        True,
        flag="--no-prefix-cache",
        negated=True,
        help="Re-evaluate every prompt in full (no KV-cache reuse).",
    )
    batch_wait_ms: float = setting(
        5.0,
        flag="--batch-wait",
        min=0,
        max=1000,
        metavar="MS",
        help="Admit a burst of requests together: wait until none has arrived for MS (at most 5x MS); "
        "0 = off.",
    )
    draft_max: int = setting(
        0,
        min=0,
        max=16,
        metavar="N",
        help="Speculative decoding: verify up to N tokens drafted by prompt lookup per step; 0 = off.",
    )
    draft_mode: str = setting(
        "adaptive",
        choices=("adaptive", "always"),
        help="With --draft-max: draft only where recent drafts pay for the measured cost of verifying "
        "them (adaptive), or verify every draft found (always).",
    )
    n_threads: int | None = setting(None, flag="--threads", min=1, help="CPU threads [default: all].")
    n_gpu_layers: int = setting(0, flag="--gpu-layers", help="Layers to offload to a GPU; -1 = all.")
    metrics: bool = setting(False, help="Serve Prometheus metrics at /metrics.")
    log_requests: bool = setting(
        True, flag="--no-log", negated=True, help="Do not write requests to the request log."
    )
    log_db: str | None = setting(
        None, metavar="FILE", help="Request log file [default: see `hallmark logs`]."
    )
    watermark: str | None = setting(
        DEFAULT_SCHEME,
        flag="--watermark-scheme",
        choices=SCHEMES,
        help="Scheme that watermarks sampled output.",
    )
    # The variable is HALLMARK_WATERMARK_KEY_NAME: HALLMARK_WATERMARK_KEY holds a secret itself.
    watermark_key: str | None = setting(
        None, env="watermark_key_name", metavar="NAME_OR_ID", help="Stored key to use."
    )
    policy: str | None = setting(
        None,
        metavar="FILE",
        help="Request policy: a YAML file, 'default' or 'off' [default: the shipped policy].",
    )
    zero_shot: bool = setting(
        True,
        help="Offer the zero-shot assessment at /v1/detect (loads both shipped models on first use).",
    )
    shutdown_timeout: float = setting(
        30.0, min=0, help="Seconds in-flight requests get to finish on Ctrl-C / SIGTERM."
    )
