"""`hallmark models` and `hallmark info`: the built-in models, and any GGUF file's metadata.

Both read GGUF headers only; neither loads a model.
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def models(as_json: bool) -> None:
    """List the built-in models: installed or not, size, architecture, parameters, context, license.

    \b
    Examples:
      hallmark models
      hallmark models --json
    """
    from hallmark.gguf_info import read_gguf_info

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
    if as_json:
        click.echo(json.dumps(rows, indent=2))
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
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo('\nAny local .gguf file works too: hallmark generate -m ./my-model.gguf "..."')


@click.command()
@click.argument("model", envvar=envvar("model"))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info(model: str, as_json: bool) -> None:
    """Show a model's GGUF metadata (MODEL is a catalog name or a .gguf path).

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
