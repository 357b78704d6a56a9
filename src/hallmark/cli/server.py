"""`hallmark serve` and `hallmark logs`: the HTTP server and its request log, from the command line.

serve's flags and their HALLMARK_* variables are derived from the fields of
hallmark.server.config.ServerConfig (`dataclass_options`), so each default is written once, there.
The server itself (FastAPI, uvicorn, the models) is imported only when `serve` runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from hallmark.cli.options import config_from_options, dataclass_options, envvar
from hallmark.errors import HallmarkError
from hallmark.server.config import ServerConfig


def _read_key_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise HallmarkError(f"cannot read the API key file {path}: {e.strerror}") from e
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise HallmarkError(f"the API key file {path} holds no key")
    return keys


def _server_options(command: Any) -> Any:
    """serve's and ui's flags: the models, every ServerConfig field, --api-key-file."""
    command = click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False),
        envvar=envvar("api_key_file"),
        show_envvar=True,
        help="File with API keys, one per line (added to --api-key).",
    )(command)
    command = dataclass_options(ServerConfig, exclude=("models",))(command)
    command = click.option(
        "-m",
        "--model",
        "model_flags",
        multiple=True,
        metavar="NAME",
        envvar=envvar("serve_model"),
        show_envvar=True,
        help="A model to serve, as MODELS takes them (repeatable).",
    )(command)
    return click.argument("models", nargs=-1)(command)


@click.command()
@_server_options
def serve(
    models: tuple[str, ...], model_flags: tuple[str, ...], api_key_file: str | None, **options: Any
) -> None:
    """Serve MODELS (default: the default model) over an OpenAI-compatible HTTP API and a web page.

    MODELS are catalog names, registered fine-tuned names or .gguf paths. Each model file is loaded
    once: a registered adapter of a served base, and each --lora adapter, is served under its own
    name on the base's weights, in the same continuous batch.

    Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, POST /v1/detect,
    POST /v1/provenance/verify, GET /v1/logs, GET /health, GET /metrics with --metrics, and the
    web page at / (chat, check a text, the log). Requests are batched continuously; every
    response carries its watermark spec and an AI-generated disclosure (`hallmark` object and
    X-Hallmark-* headers), and is written to the request log unless --no-log.

    \b
    Examples:
      hallmark serve
      hallmark serve smollm2-135m-instruct gemma-3-270m --port 8080 --metrics
      HALLMARK_API_KEY=s3cret hallmark serve --parallel 16
      hallmark serve ./my-model.gguf --api-key-file ~/.config/hallmark/api-keys
      hallmark serve -m smollm2 --lora tuned=./tuned.gguf
      hallmark serve gemma-3-270m --draft-max 4   # speculative decoding where it pays
    \b
    Then, with the official client:
      OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="s3cret")
    or open http://127.0.0.1:8000/ in a browser.
    """
    _run_server(models, model_flags, api_key_file, options, open_page=False)


@click.command()
@_server_options
@click.option(
    "--no-browser",
    is_flag=True,
    envvar=envvar("no_browser"),
    show_envvar=True,
    help="Only print the page's address; do not open a browser.",
)
def ui(
    models: tuple[str, ...],
    model_flags: tuple[str, ...],
    api_key_file: str | None,
    no_browser: bool,
    **options: Any,
) -> None:
    """Start the server (as `hallmark serve` does, same flags) and open its web page.

    The page chats with MODELS, checks any text for the watermark (and, zero-shot, for machine
    writing), verifies provenance manifests and shows the request log. It is plain HTML served
    by hallmark itself: it works offline and loads nothing from elsewhere.

    \b
    Examples:
      hallmark ui
      hallmark ui smollm2-135m-instruct gemma-3-270m
      hallmark ui --port 8080 --no-browser
    """
    _run_server(models, model_flags, api_key_file, options, open_page=not no_browser)


def _run_server(
    models: tuple[str, ...],
    model_flags: tuple[str, ...],
    api_key_file: str | None,
    options: dict[str, Any],
    open_page: bool,
) -> None:
    from hallmark.server.app import load_state, serve_forever

    ctx = click.get_current_context()
    if ctx.get_parameter_source("api_keys") is click.core.ParameterSource.COMMANDLINE:
        click.echo(
            "hallmark: warning: an --api-key on the command line is visible to every user of this "
            "machine (ps); prefer HALLMARK_API_KEY or --api-key-file",
            err=True,
        )

    keys = list(options["api_keys"]) + (_read_key_file(api_key_file) if api_key_file else [])
    options["api_keys"] = tuple(keys)
    config = config_from_options(ServerConfig, {**options, "models": [*model_flags, *models]})
    # The engine thread re-takes the GIL after every llama_decode; with Python's default 5 ms switch
    # interval it can wait that long behind the event loop on every token.
    sys.setswitchinterval(float(os.environ.get("HALLMARK_SWITCH_INTERVAL", "0.0002")))
    state = load_state(config)
    names = ", ".join(state.engines)
    auth = "API key required" if keys else "no API key (anyone who can reach the port can use it)"
    log_where = state.request_log.path if state.request_log else "off"
    page = page_url(config.host, config.port)
    click.echo(
        f"hallmark: serving {names} on http://{config.host}:{config.port}/v1 - {auth}; "
        f"request log: {log_where}; web page: {page}",
        err=True,
    )
    if open_page:
        threading.Thread(target=_open_when_up, args=(page,), daemon=True).start()
    serve_forever(state, config)


def page_url(host: str, port: int) -> str:
    """The address a browser on this machine opens: a wildcard bind is reached on loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _open_when_up(url: str, wait: float = 60.0) -> None:
    """Open `url` in the default browser once the server answers /health (it binds after loading)."""
    import urllib.request
    import webbrowser

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "health", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    if not webbrowser.open(url):
        click.echo(f"hallmark: open {url} in a browser", err=True)


@click.command()
@click.argument("request_id", required=False)
@click.option(
    "-n", "--count", type=click.IntRange(1), default=20, show_default=True, help="Requests to list."
)
@click.option(
    "--model",
    "model",
    default=None,
    envvar=envvar("logs_model"),
    show_envvar=True,
    help="Only requests to this model.",
)
@click.option(
    "--log-db",
    type=click.Path(dir_okay=False),
    default=None,
    envvar=envvar("log_db"),
    show_envvar=True,
    help="Request log file.",
)
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
    try:
        exists = path.exists()
    except OSError as e:  # a directory of another user's (the log's is 0700), a name too long, ...
        raise HallmarkError(f"cannot read the request log {path}: {e.strerror}") from None
    if not exists:
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


def _or_dash(value: Any, fmt: str = "") -> str:
    """`value` formatted, or '-' where the log holds NULL (a request refused before it ran has no
    duration or token counts)."""
    return "-" if value is None else format(value, fmt)


def _print_request(r: dict[str, Any]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
    click.echo(f"{r['id']}  {r['endpoint']}  {when}")
    click.echo(f"  model      {r['model'] or '-'}")
    click.echo(
        f"  status     {r['status']} (HTTP {r['http_status']})" + (f": {r['error']}" if r["error"] else "")
    )
    click.echo(f"  client     {r['client'] or '-'}" + (f", user {r['user']}" if r["user"] else ""))
    click.echo(
        f"  tokens     {_or_dash(r['prompt_tokens'])} prompt + {_or_dash(r['completion_tokens'])} completion"
    )
    duration = _or_dash(r["duration_ms"], ".0f")
    click.echo(f"  duration   {duration}" + (" ms" if r["duration_ms"] is not None else ""))
    click.echo(f"  watermark  {r['watermark_spec'] or 'none'}")
    click.echo(f"  params     {json.dumps(r['params'])}")
    click.echo("  prompt")
    click.echo("    " + (r["prompt"] or "").replace("\n", "\n    "))
    click.echo("  output")
    click.echo("    " + (r["output"] or "").replace("\n", "\n    "))
