"""Training data: JSONL (or plain text) in, token ids with a mask of the tokens to learn out.

Each JSONL line is one record; its format is detected from its fields, line by line:

| format | fields | learned tokens |
|---|---|---|
| chat | `messages` (OpenAI format, ending with an assistant turn) | each assistant turn and its end |
| prompt_completion | `prompt`, `completion` | the completion and an end-of-sequence token |
| text | `text` | all of it (long texts are cut into windows) |
| translation | `source`, `reference` (+ `source_lang`/`target_lang`, or --from/--to) | the reference |
| summarization | `document`, `summary` | the summary |
| qa | `context`, `question`, `answers` (a list; the first is learned) or `answer` | the answer |

The task formats are the files `hallmark eval` reads, rendered with the same task prompts that
`hallmark translate/summarize/ask` send (hallmark.tasks.prompts, in the style given), so a model
tuned on them answers better through those commands with nothing else changed. Tokens and chat
templates are the engine's own (a loaded hallmark Model: llama.cpp's tokenizer and the GGUF's
template, exactly what serving renders); message text never becomes a control token. Chats are
rendered with the model's disclosure instruction, as `hallmark chat` and the server render them.

Anything else gets a one-line DataError naming the file and line. An example longer than
`max_length` tokens is an error, never silently cut (plain text is the exception: it is split into
windows, as pretraining corpora are).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hallmark.errors import HallmarkError
from hallmark.model import Model
from hallmark.tasks.prompts import model_kind, qa_prompt, summary_prompt, translation_prompt

Format = Literal["chat", "prompt_completion", "text", "translation", "summarization", "qa"]
FORMATS: tuple[Format, ...] = ("chat", "prompt_completion", "text", "translation", "summarization", "qa")
TASK_FORMATS = ("translation", "summarization", "qa")
# Style each task format is rendered in unless told otherwise: the labelled format with no examples
# (hallmark.tasks.prompts "zeroshot"); tuned models then need no few-shot examples in their prompts.
DEFAULT_STYLES = {"translation": "zeroshot", "summarization": "tldr", "qa": "zeroshot"}
MAX_FILE_BYTES = 2 << 30  # a training file is read whole; refuse what cannot be meant


class DataError(HallmarkError, ValueError):
    """Training data that cannot be used, with the file and line it is about."""


@dataclass
class Example:
    """One training sequence: ids[i] is learned (predicted from ids[:i]) where learn[i] is True."""

    ids: list[int]
    learn: list[bool]
    line: int  # where it came from (1-based), for messages

    @property
    def n_learned(self) -> int:
        return sum(self.learn)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_records(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; a .txt file is one text record
    per paragraph-separated line. Errors name the file and the line."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{p}: {size} bytes is more than the {MAX_FILE_BYTES} a training file may have")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise DataError(f"{p} is a folder, not a data file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"cannot read {p}: {e.strerror}") from None
    lines = text.splitlines()
    records: list[tuple[int, dict[str, Any]]] = []
    if p.suffix.lower() == ".txt":
        records = [(n, {"text": line}) for n, line in enumerate(lines, 1) if line.strip()]
    else:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not valid JSON ({e.msg}); use JSONL, or a .txt file") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{n}: each line must be a JSON object")
            records.append((n, obj))
    if not records:
        raise DataError(f"{p} has no records (it is empty)")
    return records


def detect_format(record: dict[str, Any], where: str) -> Format:
    """The record's format, from its fields (see the module docstring)."""
    if "messages" in record:
        return "chat"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "source" in record and "reference" in record:
        return "translation"
    if "document" in record and "summary" in record:
        return "summarization"
    if "question" in record and ("answers" in record or "answer" in record):
        return "qa"
    if "text" in record:
        return "text"
    keys = ", ".join(sorted(record)[:8]) or "none"
    raise DataError(
        f"{where}: unknown record format (fields: {keys}); expected messages, prompt+completion, text, "
        "source+reference (translation), document+summary, or question+answers (qa)"
    )


@dataclass
class Renderer:
    """Turns records into Examples with a loaded model's tokenizer and templates."""

    model: Model
    max_length: int
    style: str | None = None  # task prompt style (None: DEFAULT_STYLES)
    source_lang: str | None = None
    target_lang: str | None = None

    def render(self, record: dict[str, Any], fmt: Format, where: str, line: int) -> list[Example]:
        if fmt == "text":
            return self._text(_string(record, "text", where), line)
        if fmt == "chat":
            ids, learn = self._chat(record.get("messages"), where)
        elif fmt == "prompt_completion":
            prompt_ids = self.model.tokenize(_string(record, "prompt", where))
            answer = self.model.tokenize(_string(record, "completion", where), add_special=False)
            ids, learn = (
                prompt_ids + answer + [self.eos],
                [False] * len(prompt_ids) + [True] * (len(answer) + 1),
            )
        else:
            ids, learn = self._task(record, fmt, where)
        if len(ids) > self.max_length:
            raise DataError(
                f"{where}: the example is {len(ids)} tokens, longer than the maximum length of "
                f"{self.max_length} (raise --max-length, up to the model's context)"
            )
        if not any(learn):
            raise DataError(f"{where}: the example has nothing to learn (an empty answer)")
        return [Example(ids, learn, line)]

    @property
    def eos(self) -> int:
        return self.model.backend.eos_token

    def _text(self, text: str, line: int) -> list[Example]:
        ids = self.model.tokenize(text) + [self.eos]
        windows = []  # windows of max_length; a window's first token has no context and is not learned
        for start in range(0, len(ids), self.max_length):
            chunk = ids[start : start + self.max_length]
            if len(chunk) > 1:
                windows.append(Example(chunk, [False] + [True] * (len(chunk) - 1), line))
        return windows

    def _chat(self, messages: Any, where: str, disclose: bool = True) -> tuple[list[int], list[bool]]:
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: messages must be a non-empty list")
        if not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
            raise DataError(f"{where}: the conversation must end with an assistant message (what to learn)")
        # A conversation gets what `hallmark chat` and the server render (the disclosure instruction);
        # a task prompt goes as the task runner sends it, without one.
        convo = self.model.disclosure.apply(messages) if disclose else messages
        try:
            full = self.model.chat_prompt_ids(convo, add_generation_prompt=False)
            learn = [False] * len(full)
            for i, m in enumerate(convo):
                if m.get("role") != "assistant":
                    continue
                start = self.model.chat_prompt_ids(convo[:i]) if i else []
                end = self.model.chat_prompt_ids(convo[: i + 1], add_generation_prompt=False)
                if full[: len(start)] != start or full[: len(end)] != end:
                    raise DataError(
                        f"{where}: the model's chat template does not render this conversation turn by "
                        "turn, so its answers cannot be told apart from the prompt"
                    )
                learn[len(start) : len(end)] = [True] * (len(end) - len(start))
        except HallmarkError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{where}: {e}") from None
        return full, learn

    def _task(self, record: dict[str, Any], fmt: Format, where: str) -> tuple[list[int], list[bool]]:
        style = self.style or DEFAULT_STYLES[fmt]
        try:
            if fmt == "translation":
                source = record.get("source_lang") or self.source_lang
                target = record.get("target_lang") or self.target_lang
                if not source or not target:
                    raise DataError(
                        f"{where}: no source_lang/target_lang in the record; give --from and --to"
                    )
                prompt = translation_prompt(_string(record, "source", where), source, target, style)
                answer = _string(record, "reference", where)
            elif fmt == "summarization":
                prompt = summary_prompt(_string(record, "document", where), style)
                answer = _string(record, "summary", where)
            else:
                answers = record.get("answers", [record.get("answer")])
                if not isinstance(answers, list) or not answers or not isinstance(answers[0], str):
                    raise DataError(f"{where}: answers must be a non-empty list of strings")
                context = record.get("context")
                prompt = qa_prompt(_string(record, "question", where), context or None, style)
                answer = answers[0]
        except HallmarkError as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{where}: {e}") from None
        if prompt.messages is not None and (prompt.text is None or model_kind(self.model) == "chat"):
            # The same choice the task runner makes: chat models get the messages through the template.
            return self._chat(
                [*prompt.messages, {"role": "assistant", "content": answer}], where, disclose=False
            )
        assert prompt.text is not None
        prompt_ids = self.model.tokenize(prompt.text)
        # The answer as the model writes it after the prompt: a space, the text, then the end of the
        # line the prompt's stop sequence waits for (or the end of sequence without one).
        answer_ids = self.model.tokenize(" " + answer.strip(), add_special=False)
        end = self.model.tokenize("\n", add_special=False) if "\n" in prompt.stop else [self.eos]
        ids = prompt_ids + answer_ids + end
        return ids, [False] * len(prompt_ids) + [True] * (len(answer_ids) + len(end))


def _string(record: dict[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {field!r} must be a non-empty string")
    return value


def load_examples(
    path: str | Path,
    model: Model,
    max_length: int,
    *,
    style: str | None = None,
    source_lang: str | None = None,
    target_lang: str | None = None,
    limit: int | None = None,
) -> tuple[list[Example], Format]:
    """Every record of the file as Examples, and the file's format (one per file: a file that mixes
    formats is refused, since its records would be learned in different ways)."""
    renderer = Renderer(model, max_length, style, source_lang, target_lang)
    examples: list[Example] = []
    first: Format | None = None
    for line, record in read_records(path)[:limit]:
        where = f"{path}:{line}"
        fmt = detect_format(record, where)
        if first is None:
            first = fmt
        elif fmt != first:
            raise DataError(f"{where}: a {fmt} record in a file of {first} records; use one format per file")
        examples.extend(renderer.render(record, fmt, where, line))
    assert first is not None
    return examples, first


def count_tokens(examples: Sequence[Example]) -> tuple[int, int]:
    """(all tokens, learned tokens) over the examples."""
    return sum(len(e.ids) for e in examples), sum(e.n_learned for e in examples)
