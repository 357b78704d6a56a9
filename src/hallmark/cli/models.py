"""`hallmark models` and `hallmark info`: the built-in and registered models, and any GGUF's metadata.

`hallmark models` lists the catalog's models and, below them, the registry's fine-tuned ones (the
user's and the shipped ones, hallmark.registry); `hallmark models rm NAME` removes a registered one.
Both commands read GGUF headers only; neither loads a model.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hallmark.catalog import CATALOG, DEFAULT_MODEL, is_installed, model_path
from hallmark.cli.options import envvar


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _human_count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the built-in models (installed or not, size, architecture, parameters, context, license)
    and the registered fine-tuned ones (kind lora or merged, base, training data hash, task).

    A registered name works wherever a model name does (-m NAME).

    \b
    Examples:
      hallmark models
      hallmark models --json
      hallmark models rm my-old-adapter
    """
    if ctx.invoked_subcommand is not None:
        return
    from hallmark.gguf_info import read_gguf_info
    from hallmark.registry import entries

    rows = []
    for entry in CATALOG:
        row: dict[str, Any] = {
            "name": entry.name,
            "aliases": list(entry.aliases),
            "package": entry.package,
            "kind": entry.kind,
            "license": entry.license,
            "default": entry.name == DEFAULT_MODEL,
            "installed": is_installed(entry),
        }
        if row["installed"]:
            info = read_gguf_info(model_path(entry))
            row.update(info.to_dict(with_metadata=False))
            row["gguf_license"] = info.license
            row["license"] = entry.license
        rows.append(row)
    registered = [_registry_row(e) for e in entries()]
    if as_json:
        click.echo(json.dumps(rows + registered, indent=2))
        return
    header = ("NAME", "KIND", "SIZE", "ARCH", "PARAMS", "CONTEXT", "CHAT TEMPLATE", "LICENSE")
    table = [header]
    for r in rows:
        name = r["name"] + (" (default)" if r["default"] else "")
        if not r["installed"]:
            table.append(
                (name, r["kind"], "-", "-", "-", "-", "-", f"{r['license']} [pip install {r['package']}]")
            )
            continue
        table.append(
            (
                name,
                r["kind"],
                _human_size(r["file_size"]),
                r["architecture"],
                _human_count(r["parameters"]),
                str(r["context_length"]),
                "yes" if r["has_chat_template"] else "no (plain fallback)",
                r["license"],
            )
        )
    _print_table(table)
    if registered:
        click.echo("\nFine-tuned models (registry):")
        reg_header = ("NAME", "KIND", "BASE", "DATA", "TASK", "CREATED", "SOURCE")
        reg_table = [reg_header]
        for r in registered:
            task = r["task"] + (f" ({r['style']})" if r["style"] else "") if r["task"] else "-"
            data = r["data_sha256"][:12] if r["data_sha256"] else "-"
            reg_table.append(
                (r["name"], r["kind"], r["base"], data, task, r["created"][:10] or "-", r["source"])
            )
        _print_table(reg_table)
    click.echo('\nAny local .gguf file works too: hallmark generate -m ./my-model.gguf "..."')
    click.echo('Any LoRA adapter GGUF too: hallmark generate -m BASE --lora ./adapter.gguf "..."')


def _print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _registry_row(entry: Any) -> dict[str, Any]:
    """A registry entry as `hallmark models --json` shows it (kind "lora" or "merged")."""
    return {**entry.to_dict(), "kind": entry.kind, "source": entry.source}


@models.command("rm")
@click.argument("name")
def models_rm(name: str) -> None:
    """Remove the registered model NAME (its adapter and merged files stay where they are).

    \b
    Examples:
      hallmark models rm my-old-adapter
    """
    from hallmark.registry import remove

    remove(name)  # a malformed entry can be removed too: nothing of it is read
    click.echo(f"removed {name} (the adapter and merged files it named are kept)")


@click.command()
@click.argument("model", envvar=envvar("model"))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(model: str, as_json: bool) -> None:
    """Show a model's GGUF metadata (MODEL is a catalog name, a registered name or a .gguf path).

    \b
    Examples:
      hallmark info smollm2-135m-instruct
      hallmark info ./models/my-model.gguf --json
    """
    from hallmark.catalog import resolve
    from hallmark.gguf_info import read_gguf_info

    resolved = resolve(model)
    data = {"name": resolved.name, **read_gguf_info(resolved.path).to_dict()}
    if resolved.entry is not None:
        data["license"] = resolved.entry.license
    if resolved.registry is not None:  # a registered fine-tuned model: the base's file, and what is added
        data["adapters"] = [str(p) for p in resolved.adapters]
        data["registry"] = resolved.registry.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    meta = data.pop("metadata")
    for key, value in data.items():
        click.echo(f"{key:18} {value}")
    click.echo("\nGGUF metadata (arrays such as the token list not shown):")
    for key, value in meta.items():
        text = value.replace("\n", "\\n")
        click.echo(f"  {key:40} {text if len(text) <= 100 else text[:97] + '...'}")
