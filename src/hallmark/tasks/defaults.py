"""The model each task command runs when none is named: the installed one that scored best on the
task's dev set.

Each task lists candidates in order of their dev-set scores (bench/results/adapters.json and
bench/results/tasks.json, greedy, the full dev sets); the first one that is installed wins: a
shipped task adapter needs its base model's package, a catalog model its own. `-m` (or
$HALLMARK_MODEL) always overrides this choice.
"""

from __future__ import annotations

from hallmark.catalog import DEFAULT_MODEL, find_entry, is_installed
from hallmark.registry import find

# task -> candidates, best first (the scores are in docs/finetune.md and docs/tasks.md).
TASK_MODELS: dict[str, tuple[str, ...]] = {
    # chrF on tatoeba en-fr/de/es: the gemma adapter 45.4/46.9/55.5 (zero-shot), gemma 3-shot
    # 39.6/38.0/44.2, SmolLM2 about 16-17.
    "translation": ("translate-gemma", "gemma-3-270m", DEFAULT_MODEL),
    "summarization": (DEFAULT_MODEL,),
    # F1 on squad dev300: the SmolLM2 adapter 52.5 (zero-shot), gemma 1-shot 41.1, SmolLM2 3-shot 31.6.
    "qa": ("qa-smollm2", "gemma-3-270m", DEFAULT_MODEL),
}


def installed(name: str) -> bool:
    """Whether `name` (a catalog model or a registered one) can be loaded here."""
    entry = find_entry(name)
    if entry is not None:
        return is_installed(entry)
    registered = find(name)
    if registered is None:
        return False
    base = find_entry(registered.base)
    return base is None or is_installed(base)


def default_model(task: str) -> str:
    """The best installed model for `task` (the default model when none of the candidates is)."""
    for name in TASK_MODELS.get(task, ()):
        if installed(name):
            return name
    return DEFAULT_MODEL
