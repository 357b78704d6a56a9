"""Render the benchmark tables from bench/results/*.json into docs/ and bench/results/*.md.

Contract:
- The JSON files under bench/results are the record; this script only reads them.
- Every page under docs/ may hold marked blocks,

      <!-- bench:NAME -->
      ...generated text...
      <!-- /bench:NAME -->

  where NAME is a key of `benchmark_tables.BLOCKS`. `render.py` replaces what lies between the
  markers with the block rendered from its JSON file; everything outside the markers is left alone.
- Each result file with a table (`benchmark_tables.RESULT_TABLES`) gets its `.md` twin rewritten
  in full, with the same text the benchmark script writes after a run.
- Figures the docs show (`FIGURES`) are copied from bench/results into docs/.

    python bench/render.py            # rewrite every stale block, .md file and figure
    python bench/render.py --check    # change nothing; exit 1 naming each stale block or file

Exit status: 0 when everything is (or now is) up to date; 1 with --check when something is stale;
2 for a malformed page (an unknown block name, a marker without its end) or a missing result file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmark_tables import BLOCKS, RESULT_TABLES

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
ROOT = BENCH.parent
DOCS = ROOT / "docs"
# bench/results file -> its copy under docs/ (mkdocs serves only what lies in docs/).
FIGURES = {"watermark_roc.png": "assets/watermark_roc.png", "zeroshot_roc.png": "assets/zeroshot_roc.png"}

START = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->[ \t]*$")
END = "<!-- /bench:{name} -->"
FENCE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")


class RenderError(Exception):
    """A page or result file this script cannot work with."""


@dataclass
class Stale:
    path: Path
    what: str  # "block NAME", "file" or "figure"
    source: str  # the result file it comes from, relative to the repository root


def load_results() -> dict[str, dict]:
    """Every result file the blocks name, parsed, by stem."""
    out = {}
    for stem in sorted({stem for stem, _ in BLOCKS.values()}):
        path = RESULTS / f"{stem}.json"
        if path.exists():
            out[stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def render_block(name: str, results: dict[str, dict]) -> str:
    if name not in BLOCKS:
        raise RenderError(f"unknown block '{name}' (known: {', '.join(sorted(BLOCKS))})")
    stem, fn = BLOCKS[name]
    if stem not in results:
        raise RenderError(f"block '{name}' needs {RESULTS / (stem + '.json')}, which does not exist")
    try:
        return fn(results[stem])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise RenderError(f"block '{name}': {stem}.json lacks what it needs ({type(e).__name__}: {e})") from e


def render_page(text: str, results: dict[str, dict], where: Path) -> tuple[str, list[str]]:
    """The page with every marked block rendered, and the names of the blocks that changed.

    Markers inside fenced code blocks (``` or ~~~) are examples, not blocks, and are left alone.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    changed: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        stripped = line.strip()
        if fence is not None:
            if len(stripped) >= len(fence) and stripped == fence[0] * len(stripped):
                fence = None
            continue
        if fence_match := FENCE.match(line):
            fence = fence_match[1]
            continue
        match = START.match(line)
        if not match:
            continue
        name = match["name"]
        end_marker = END.format(name=name)
        for j in range(i, len(lines)):
            if lines[j].strip() == end_marker:
                break
            if nested := START.match(lines[j]):
                raise RenderError(f"{where}:{j + 1}: block '{name}' holds another block ('{nested['name']}')")
        else:
            raise RenderError(f"{where}:{i}: '{stripped}' has no '{end_marker}'")
        body = "\n" + render_block(name, results).strip("\n") + "\n\n"
        if "".join(lines[i:j]) != body:
            changed.append(name)
        out.append(body)
        i = j  # the end marker is copied on the next turn
    return "".join(out), changed


def _source(name: str) -> str:
    return str((RESULTS / name).relative_to(ROOT))


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) if DOCS.exists() else []


def run(check: bool) -> list[Stale]:
    """Render everything; write it unless `check`. Returns what was (or would be) rewritten."""
    results = load_results()
    stale: list[Stale] = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new, changed = render_page(text, results, page.relative_to(ROOT))
        stale += [Stale(page, f"block {name}", _source(BLOCKS[name][0] + ".json")) for name in changed]
        if changed and not check:
            page.write_text(new, encoding="utf-8")
    for stem, block in RESULT_TABLES.items():
        if stem not in results:
            continue
        md = RESULTS / f"{stem}.md"
        new = render_block(block, results)
        if not md.exists() or md.read_text(encoding="utf-8") != new:
            stale.append(Stale(md, "file", _source(stem + ".json")))
            if not check:
                md.write_text(new, encoding="utf-8")
    for source, target in FIGURES.items():
        src, dst = RESULTS / source, DOCS / target
        if not src.exists():
            continue
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            stale.append(Stale(dst, "figure", _source(source)))
            if not check:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(src.read_bytes())
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale")
    args = ap.parse_args(argv)
    try:
        stale = run(check=args.check)
    except (RenderError, OSError, json.JSONDecodeError) as e:
        print(f"render.py: error: {e}", file=sys.stderr)
        return 2
    for s in stale:
        where = s.path.relative_to(ROOT)
        if args.check:
            print(f"stale: {where}: {s.what} differs from what {s.source} gives", file=sys.stderr)
        else:
            print(f"rendered: {where}: {s.what}")
    if args.check and stale:
        print("run `python bench/render.py` to update it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
