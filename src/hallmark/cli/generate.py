"""`hallmark generate` and `hallmark chat`: text from a model, streamed to the terminal or as JSON.

Both take the model options and one flag per sampling parameter (hallmark.cli.options). The model
(and llama.cpp) is imported only when a command runs, never for `--help`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Generator
from typing import Any

import click

from hallmark.cli.options import (
    envvar,
    grammar_from,
    load_model,
    model_options,
    output_format_options,
    policy_option,
    sampling_options,
    sampling_params_from,
)
from hallmark.errors import HallmarkError


def _read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a PROMPT argument, or pipe the prompt on stdin")
        return sys.stdin.read()
    return prompt


def _stream_to_terminal(chunks: Generator[Any, None, None]) -> Any:
    final = None
    try:
        for chunk in chunks:
            if chunk.text:
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
            if chunk.final is not None:
                final = chunk.final
    finally:
        chunks.close()  # on Ctrl-C too: frees the sequence's KV cache at once
    click.echo()
    return final


def provenance_option(f: Any) -> Any:
    return click.option(
        "--provenance",
        "provenance_file",
        type=click.Path(dir_okay=False, writable=True),
        default=None,
        help="Write the answer's signed provenance manifest (JSON) to this file; check it with "
        "`hallmark verify TEXT --manifest FILE`. In a chat loop, the file holds one per answer.",
    )(f)


def _write_manifests(path: str | None, manifests: list[dict[str, Any]]) -> None:
    if path is None or not manifests:
        return
    data = manifests[0] if len(manifests) == 1 else manifests
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
    except OSError as e:
        raise HallmarkError(f"cannot write the provenance manifest to {path}: {e.strerror}") from e


def _check_complete(result: Any, grammar: Any) -> None:
    """A constrained output cut short by max_tokens or the full context is not valid: the text
    printed so far stays, and the command fails with a one-line error (never a silent truncation)."""
    if grammar is not None and result.finish_reason == "length":
        raise HallmarkError(
            f"the output is incomplete under the {grammar.kind.replace('_', ' ')}: generation ended by "
            f"{result.stop_reason.value.replace('_', ' ')}; raise --max-tokens"
        )


def _print_stats(result: Any) -> None:
    t = result.timings
    click.echo(
        f"[{result.prompt_tokens} prompt tokens at {t.prompt_per_second:.1f} tok/s, "
        f"{result.completion_tokens} generated at {t.predicted_per_second:.1f} tok/s, "
        f"finish: {result.stop_reason}]",
        err=True,
    )


@click.command()
@click.argument("prompt", required=False)
@model_options
@policy_option
@sampling_options
@output_format_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (text, tokens, finish reason, timings)."
)
@click.option("-v", "--verbose", is_flag=True, help="Print token counts and speed to stderr.")
@provenance_option
def generate(
    prompt: str | None, as_json: bool, verbose: bool, provenance_file: str | None, **options: Any
) -> None:
    """Continue PROMPT (or stdin, with '-' or no argument) and stream the text.

    \b
    Examples:
      hallmark generate "Once upon a time"
      hallmark generate "List three fruits:" --temperature 0 --max-tokens 40
      echo "The capital of France is" | hallmark generate --stop . --json
      hallmark generate -m gemma-3-270m "Water boils at" --seed 7 --logprobs 3 --json
      hallmark generate "Breaking news:" --temperature 1 --provenance news.json > news.txt
      hallmark generate --policy my-policy.yaml "Write a product description for a kettle."
      hallmark generate "A JSON record of a cat:" --json-schema cat.schema.json
      hallmark generate "Is water wet? Answer:" --grammar yes-no.gbnf
    """
    params = sampling_params_from(options)
    grammar = grammar_from(options)
    text = _read_prompt(prompt)
    llm = load_model(options)
    if as_json:
        result = llm.generate(text, params=params, response_format=grammar)
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        _check_complete(result, grammar)
    else:
        result = _stream_to_terminal(llm.generate(text, params=params, response_format=grammar, stream=True))
        if verbose:
            _print_stats(result)
    _write_manifests(provenance_file, [result.provenance])
    _check_complete(result, grammar)


_CHAT_HELP = "Commands: /reset clears the conversation, /exit (or Ctrl-D) quits, /help shows this."


@click.command()
@click.argument("message", required=False)
@model_options
@policy_option
@sampling_options
@output_format_options
@click.option(
    "-s", "--system", default=None, envvar=envvar("system"), show_envvar=True, help="System prompt."
)
@click.option("--json", "as_json", is_flag=True, help="With MESSAGE: print the reply as one JSON object.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Print token counts and speed to stderr after each reply."
)
@provenance_option
def chat(
    message: str | None,
    system: str | None,
    as_json: bool,
    verbose: bool,
    provenance_file: str | None,
    **options: Any,
) -> None:
    """Chat with a model: answer MESSAGE once, or talk in a loop.

    With no MESSAGE, reads messages from the terminal (history kept), or one message per line
    from piped stdin. /reset clears the history, /exit quits.

    \b
    Examples:
      hallmark chat "What is the capital of France?"
      hallmark chat --system "Answer in one sentence." --temperature 0.3
      printf 'Hi!\\nWhat did I just say?\\n' | hallmark chat
      hallmark chat --policy off "Reply in one word."   # no request screening (disclosure stays)
      hallmark chat "Extract the people named: Ada met Alan in Paris." --json-schema people.json
      hallmark chat --json-object "Describe a cat as JSON with name and colour."
    """
    params = sampling_params_from(options)
    grammar = grammar_from(options)
    llm = load_model(options)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    manifests: list[dict[str, Any]] = []

    def reply(user_text: str) -> None:
        history.append({"role": "user", "content": user_text})
        if as_json:
            result = llm.chat(history, params=params, response_format=grammar)
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            result = _stream_to_terminal(
                llm.chat(history, params=params, response_format=grammar, stream=True)
            )
        manifests.append(result.provenance)
        _write_manifests(provenance_file, manifests)
        if verbose:
            _print_stats(result)
        _check_complete(result, grammar)  # an incomplete answer does not join the history
        history.append({"role": "assistant", "content": result.text})

    if message is not None:
        reply(message)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        click.echo(f"Chatting with {llm.name}. {_CHAT_HELP}", err=True)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            del history[1 if system else 0 :]
            click.echo("(conversation cleared)", err=True)
            continue
        if text == "/help":
            click.echo(_CHAT_HELP, err=True)
            continue
        try:
            reply(text)
        except HallmarkError as e:
            # One bad turn (say, history too long for the context) should not end the session.
            history.pop()
            click.echo(f"error: {e}", err=True)
            if not interactive:
                sys.exit(getattr(e, "exit_code", 1))
        except KeyboardInterrupt:
            if not interactive:
                raise
            history.pop()  # Ctrl-C stops this answer, not the session
            click.echo("\n(interrupted)", err=True)
