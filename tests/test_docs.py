"""The docs cannot drift from the code: the README's commands are what CI runs, and the option
tables of docs/ show every flag with the default its dataclass declares (the one place it is written).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from hallmark.engine.sampling import SamplingParams
from hallmark.server.config import ServerConfig
from hallmark.settings import flag_name

ROOT = Path(__file__).resolve().parents[1]
SETUP = 'python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/hallmark chat "What is 2+2?"'
TESTS = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest -q"


def test_the_readme_is_a_short_front_door_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 10_000
    assert SETUP in readme and TESTS in readme
    assert TESTS in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).exists(), link


def _option_rows(page: str, heading: str) -> dict[str, str]:
    """flag -> default cell of the first table under `## heading` (a row may name several flags)."""
    section = page.split(f"## {heading}\n", 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if rows and not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`-"):
            for flag in re.findall(r"--[a-z][a-z0-9-]*", cells[0]):
                rows.setdefault(flag, cells[1])
    return rows


def _check(cls: type, page: str, heading: str, skip: tuple[str, ...] = ()) -> None:
    rows = _option_rows((ROOT / "docs" / page).read_text(), heading)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = flag_name(f)
        assert flag in rows, f"{page}: {flag} is missing from the {heading} table"
        default, cell = f.default, rows[flag].strip("`")
        if default is MISSING or default is None or default == ():
            continue
        if isinstance(default, bool):
            expected = "on" if default and not f.metadata.get("negated") else "off"
            assert cell == expected, f"{page}: {flag} shows {cell!r}, the default is {expected}"
        elif isinstance(default, int | float):
            assert float(cell.split()[0]) == default, (
                f"{page}: {flag} shows {cell!r}, the default is {default}"
            )
        else:
            assert cell == str(default), f"{page}: {flag} shows {cell!r}, the default is {default}"


def test_the_serve_options_table_matches_server_config():
    _check(ServerConfig, "server.md", "Options", skip=("models",))


def test_the_sampling_table_matches_sampling_params():
    # --repeat-last-n is described in the --repetition-penalty row.
    _check(SamplingParams, "cli.md", "Sampling", skip=("repeat_last_n",))
    assert "--repeat-last-n` (64)" in (ROOT / "docs" / "cli.md").read_text()
    assert SamplingParams().repeat_last_n == 64


def test_the_training_options_table_matches_the_training_configs():
    from hallmark.train.config import LoraSettings, TrainConfig

    _check(TrainConfig, "finetune.md", "Training options")
    _check(LoraSettings, "finetune.md", "Training options", skip=("targets",))
    assert "`--lora-target MODULE`" in (ROOT / "docs" / "finetune.md").read_text()
