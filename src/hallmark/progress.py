"""Progress bars for long operations, on stderr so that stdout stays clean for --json."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, unit: str = "B") -> Iterator[Any]:
    from tqdm import tqdm  # on first use: importing tqdm costs ~30 ms of every CLI start

    with tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar
