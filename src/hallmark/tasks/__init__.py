"""Translation, summarization and question answering with local models (see api.py)."""

from hallmark.tasks.api import answer, summarize, translate
from hallmark.tasks.languages import LANGUAGES, UnknownLanguageError
from hallmark.tasks.runner import TaskResult

__all__ = ["LANGUAGES", "TaskResult", "UnknownLanguageError", "answer", "summarize", "translate"]
