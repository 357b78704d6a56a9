"""The layering of docs/architecture.md, enforced: each layer imports only the layers it may.

Every `import hallmark.x` / `from hallmark.x import ...` in the package (at module level or inside a
function) is checked against the table below, which mirrors the documentation's table.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hallmark"

LEAVES = ("hallmark.errors", "hallmark.settings", "hallmark.progress", "hallmark.requestlog")
WATERMARK_CORE = ("hallmark.watermark.spec", "hallmark.watermark.keys", "hallmark.watermark.prf")
WATERMARK = (*WATERMARK_CORE, "hallmark.watermark.schemes", "hallmark.watermark.detect")
BELOW_MODEL = (
    *LEAVES,
    "hallmark.backends",
    "hallmark.engine",
    "hallmark.watermark",
    "hallmark.catalog",
    "hallmark.registry",
    "hallmark.gguf_info",
    "hallmark.provenance",
    "hallmark.policy",
)

# Layer (module prefix, most specific first) -> the hallmark modules it may import (prefixes).
ALLOWED: list[tuple[str, tuple[str, ...]]] = [
    ("hallmark.backends", ("hallmark.errors", "hallmark.backends")),
    ("hallmark.watermark.api", ("hallmark.watermark", "hallmark.backends", "hallmark.catalog", *LEAVES)),
    ("hallmark.watermark", (*WATERMARK, "hallmark.backends.base", *LEAVES)),
    # The catalog resolves registered names; the registry refuses catalog names (inside `register`).
    ("hallmark.catalog", ("hallmark.registry", *LEAVES)),
    ("hallmark.registry", ("hallmark.catalog", *LEAVES)),
    ("hallmark.gguf_info", ("hallmark.backends", *LEAVES)),
    # `hallmark.__init__` for __version__ only (the manifest's "generator").
    ("hallmark.provenance", ("hallmark.watermark.keys", "hallmark.__init__", *LEAVES)),
    ("hallmark.policy", ("hallmark.policy", *LEAVES)),
    ("hallmark.engine", ("hallmark.engine", "hallmark.backends.base", *WATERMARK, *LEAVES)),
    ("hallmark.model", BELOW_MODEL),
    ("hallmark.tasks", ("hallmark.tasks", "hallmark.model", *BELOW_MODEL)),
    # Zero-shot detection loads its scoring models (hallmark.model) and reads their statistics.
    ("hallmark.zeroshot", ("hallmark.zeroshot", "hallmark.model", *BELOW_MODEL)),
    # `hallmark.detect`: the watermark's verdict and the zero-shot assessment beside it.
    ("hallmark.detection", ("hallmark.watermark", "hallmark.zeroshot", *LEAVES)),
    ("hallmark.train", ("hallmark.train", "hallmark.model", "hallmark.tasks", *BELOW_MODEL)),
    (
        "hallmark.server",
        ("hallmark.server", "hallmark.model", "hallmark.zeroshot", "hallmark.__init__", *BELOW_MODEL),
    ),
    ("hallmark.cli", ("hallmark",)),
    ("hallmark.errors", ()),
    ("hallmark.settings", ()),
    ("hallmark.progress", ()),
    ("hallmark.requestlog", ("hallmark.errors",)),
    ("hallmark.__init__", ("hallmark",)),
    ("hallmark.__main__", ("hallmark.cli",)),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from hallmark import __version__` is the package's own metadata, not a layer.
            found += [node.module if node.module != "hallmark" else "hallmark.__init__"]
    return [name for name in found if name == "hallmark" or name.startswith("hallmark.")]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_module_imports_only_what_its_layer_may():
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        layer = next((rule for rule in ALLOWED if _within(module, rule[0])), None)
        assert layer is not None, f"{module} belongs to no layer of the table"
        for imported in _imports(path):
            if not any(_within(imported, allowed) for allowed in layer[1]):
                violations.append(f"{module} imports {imported}")
    assert violations == []
