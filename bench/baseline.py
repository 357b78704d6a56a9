"""Another revision of hallmark, benchmarked beside the working tree in the same run.

`--baseline REF` in bench/decode.py and bench/serve.py checks REF out (a detached git worktree under
the benchmark cache, made once per commit) and runs its `src/` through PYTHONPATH with the same
interpreter and dependencies, so a change's cost is measured as a paired ratio on one machine in
one run rather than against an old record made on a different day.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hallmark-bench"


@dataclass(frozen=True)
class Baseline:
    ref: str  # as given, e.g. "7e25356" or "main~3"
    commit: str  # the full commit id it resolved to
    src: Path  # its source tree (put first on PYTHONPATH)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose `import hallmark` is the baseline's."""
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.src), env.get("PYTHONPATH")]))
        return env

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.ref, "commit": self.commit}


def checkout(ref: str) -> Baseline:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = CACHE / f"baseline-{commit[:12]}"
    if not (tree / "src" / "hallmark").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
    return Baseline(ref, commit, tree / "src")
