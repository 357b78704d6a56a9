"""`hallmark serve` and `hallmark logs`: the HTTP server and its request log, from the command line."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from hallmark.cli import CONTEXT_SETTINGS, _envvar, main
from hallmark.errors import HallmarkError
from hallmark.watermark.spec import DEFAULT_SCHEME, SCHEMES


def _opt(*decls: str, **kwargs: Any) -> Any:
    """An option that can also come from HALLMARK_<NAME> (NAME from the flag, or `env`)."""
    env = kwargs.pop("env", decls[0].lstrip("-"))
    return click.option(*decls, envvar=_envvar(env), show_envvar=True, **kwargs)


def _read_key_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise HallmarkError(f"cannot read the API key file {path}: {e.strerror}") from e
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise HallmarkError(f"the API key file {path} holds no key")
    return keys


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("models", nargs=-1)
@_opt("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@_opt("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@_opt("--api-key", "api_keys", multiple=True, help="Require this key as a Bearer token (repeatable).")
@_opt("--api-key-file", type=click.Path(dir_okay=False), help="File with API keys, one per line.")
@_opt(
    "--ctx-size",
    type=click.IntRange(min=8),
    default=4096,
    show_default=True,
    help="Context window per sequence.",
)
@_opt(
    "--parallel",
    "max_sequences",
    env="parallel",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Sequences per model decoded together (KV-cache slots).",
)
@_opt(
    "--max-queue",
    type=click.IntRange(0),
    default=64,
    show_default=True,
    help="Sequences that may wait for a slot; beyond that requests get 503.",
)
@_opt(
    "--prefill-chunk",
    type=click.IntRange(1),
    default=512,
    show_default=True,
    help="Most prompt tokens prefilled per step (keeps other streams flowing).",
)
@_opt(
    "--batch-wait",
    type=click.FloatRange(0, 1000),
    default=5.0,
    show_default=True,
    metavar="MS",
    help="Admit a burst of requests together: wait until none has arrived for MS (at most 5x MS); 0 = off.",
)
@_opt("--no-prefix-cache", is_flag=True, help="Re-evaluate every prompt in full (no KV-cache reuse).")
@_opt("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: all].")
@_opt("--gpu-layers", type=int, default=0, show_default=True, help="Layers to offload to a GPU; -1 = all.")
@_opt("--metrics", is_flag=True, help="Serve Prometheus metrics at /metrics.")
@_opt("--no-log", is_flag=True, help="Do not write requests to the request log.")
@_opt(
    "--log-db",
    type=click.Path(dir_okay=False),
    default=None,
    help="Request log file [default: see `hallmark logs`].",
)
@_opt(
    "--watermark-scheme",
    type=click.Choice(SCHEMES),
    default=DEFAULT_SCHEME,
    show_default=True,
    help="Scheme that watermarks sampled output.",
)
@_opt(
    "--watermark-key", env="watermark_key_name", default=None, metavar="NAME_OR_ID", help="Stored key to use."
)
@_opt(
    "--shutdown-timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish on Ctrl-C / SIGTERM.",
)
def serve(
    models: tuple[str, ...], api_keys: tuple[str, ...], api_key_file: str | None, **options: Any
) -> None:
    """Serve MODELS (default: the default model) over an OpenAI-compatible HTTP API.

    Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, POST /v1/detect,
    GET /health, and GET /metrics with --metrics. Requests are batched continuously; every
    response carries its watermark spec and an AI-generated disclosure (`hallmark` object and
    X-Hallmark-* headers), and is written to the request log unless --no-log.

    \b
    Examples:
      hallmark serve
      hallmark serve smollm2-135m-instruct gemma-3-270m --port 8080 --metrics
      HALLMARK_API_KEY=s3cret hallmark serve --parallel 16
      hallmark serve ./my-model.gguf --api-key-file ~/.config/hallmark/api-keys
    \b
    Then, with the official client:
      OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="s3cret")
    """
    import uvicorn

    from hallmark.server.app import ServerConfig, create_app, load_state

    keys = list(api_keys) + (_read_key_file(api_key_file) if api_key_file else [])
    config = ServerConfig(
        models=list(models),
        host=options["host"],
        port=options["port"],
        api_keys=tuple(keys),
        n_ctx=options["ctx_size"],
        max_sequences=options["max_sequences"],
        max_waiting=options["max_queue"],
        prefill_chunk=options["prefill_chunk"],
        prefix_cache=not options["no_prefix_cache"],
        batch_wait_ms=options["batch_wait"],
        n_threads=options["threads"],
        n_gpu_layers=options["gpu_layers"],
        metrics=options["metrics"],
        log_requests=not options["no_log"],
        log_db=options["log_db"],
        watermark=options["watermark_scheme"],
        watermark_key=options["watermark_key"],
        shutdown_timeout=options["shutdown_timeout"],
    )
    # The engine thread re-takes the GIL after every llama_decode; with Python's default 5 ms switch
    # interval it can wait that long behind the event loop on every token.
    sys.setswitchinterval(float(os.environ.get("HALLMARK_SWITCH_INTERVAL", "0.0002")))
    state = load_state(config)
    names = ", ".join(state.engines)
    auth = "API key required" if keys else "no API key (anyone who can reach the port can use it)"
    log_where = state.request_log.path if state.request_log else "off"
    click.echo(
        f"hallmark: serving {names} on http://{config.host}:{config.port}/v1 - {auth}; "
        f"request log: {log_where}",
        err=True,
    )
    uvicorn.run(
        create_app(state),
        host=config.host,
        port=config.port,
        log_level="warning",
        timeout_graceful_shutdown=config.shutdown_timeout,
    )


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("request_id", required=False)
@click.option(
    "-n", "--count", type=click.IntRange(1), default=20, show_default=True, help="Requests to list."
)
@_opt("--model", "model", env="logs_model", default=None, help="Only requests to this model.")
@_opt("--log-db", type=click.Path(dir_okay=False), default=None, help="Request log file.")
@click.option("--path", "show_path", is_flag=True, help="Print the log's location and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, or one request).")
def logs(
    request_id: str | None, count: int, model: str | None, log_db: str | None, show_path: bool, as_json: bool
) -> None:
    """List the server's logged requests, or show one in full (REQUEST_ID or a prefix of it).

    The log is $HALLMARK_LOG_DB, else ~/.local/share/hallmark/logs.db (SQLite; query it directly
    with `sqlite3` too).

    \b
    Examples:
      hallmark logs
      hallmark logs -n 5 --model gemma-3-270m
      hallmark logs chatcmpl-3f2a --json
      sqlite3 "$(hallmark logs --path)" 'select model, count(*) from requests group by model'
    """
    from hallmark.requestlog import RequestLog, default_path

    path = Path(log_db) if log_db else default_path()
    if show_path:
        click.echo(str(path))
        return
    if not path.exists():
        raise HallmarkError(f"no request log at {path} yet (the server writes it)")
    db = RequestLog(path)
    try:
        if request_id:
            row = db.get(request_id)
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False))
            else:
                _print_request(row)
            return
        rows = db.recent(count, model)
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("no requests logged yet", err=True)
        return
    for r in reversed(rows):
        when = datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M:%S")
        output = (r["output"] or r["error"] or "").replace("\n", " ")
        output = output if len(output) <= 50 else output[:47] + "..."
        click.echo(
            f"{r['id']}  {when}  {r['status']:<9} {r['model'] or '-':<22} "
            f"{r['prompt_tokens'] or 0:>5}+{r['completion_tokens'] or 0:<5} {output!r}"
        )


def _print_request(r: dict[str, Any]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
    click.echo(f"{r['id']}  {r['endpoint']}  {when}")
    click.echo(f"  model      {r['model']}")
    click.echo(
        f"  status     {r['status']} (HTTP {r['http_status']})" + (f": {r['error']}" if r["error"] else "")
    )
    click.echo(f"  client     {r['client']}" + (f", user {r['user']}" if r["user"] else ""))
    click.echo(f"  tokens     {r['prompt_tokens']} prompt + {r['completion_tokens']} completion")
    click.echo(f"  duration   {r['duration_ms']:.0f} ms")
    click.echo(f"  watermark  {r['watermark_spec'] or 'none'}")
    click.echo(f"  params     {json.dumps(r['params'])}")
    click.echo("  prompt")
    click.echo("    " + (r["prompt"] or "").replace("\n", "\n    "))
    click.echo("  output")
    click.echo("    " + (r["output"] or "").replace("\n", "\n    "))


if __name__ == "__main__":
    sys.exit(main())
