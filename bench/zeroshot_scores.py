"""Per-token statistics of many texts under a scoring model, cached on disk.

`bench/zeroshot.py` and `bench/zeroshot_calibrate.py` score thousands of texts with both shipped
models (about 20 minutes for gemma-3-270m); the cache keeps each text's `TokenStatistics`
(first `max_tokens` tokens) by the hash of its text, the model file and the token cap, so a re-run
only scores what is new.

    python bench/zeroshot_scores.py --model smollm2-135m-instruct   # fill the cache for every set
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

import hallmark
from hallmark.engine.scoring import TokenStatistics

CACHE = Path(__file__).parent / ".cache" / "zeroshot"
FIELDS = ("logprob", "log_rank", "entropy", "logprob_var")
# Tokens kept per text: the calibration's longest length (256 words) is about 330 tokens of news.
MAX_TOKENS = 400


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class ScoreCache:
    """{text hash: TokenStatistics} for one model file and token cap, in one .npz file."""

    def __init__(self, model: hallmark.Model, max_tokens: int, context: list[int] | None = None):
        # `context`: token ids the text is scored after (a chat template's turn, say), not scored.
        self.context = list(context or [])
        extra = f":{self.context}" if self.context else ""
        digest = hashlib.sha256(
            f"{model.path}:{model.backend.fingerprint()}:{max_tokens}{extra}".encode()
        ).hexdigest()
        self.path = CACHE / f"{Path(model.path).stem}-{digest[:10]}.npz"
        self.model, self.max_tokens = model, max_tokens
        self.stats: dict[str, TokenStatistics] = {}
        if self.path.exists():
            with np.load(self.path) as data:
                index = json.loads(str(data["index"]))
                columns = [data[f] for f in FIELDS]
            for key, (start, end) in index.items():
                self.stats[key] = TokenStatistics(*(c[start:end].astype(np.float64) for c in columns))
        self.dirty = False

    def save(self) -> None:
        if not self.dirty:
            return
        index, offset = {}, 0
        for key, s in self.stats.items():
            index[key] = (offset, offset + len(s))
            offset += len(s)
        columns = {
            f: np.concatenate([getattr(s, f) for s in self.stats.values()] or [np.empty(0)]).astype(
                np.float32
            )
            for f in FIELDS
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, index=json.dumps(index), **columns)
        tmp.replace(self.path)
        self.dirty = False

    def get(self, text: str) -> TokenStatistics:
        key = _key(text)
        if key not in self.stats:
            ids = self.model.tokenize(text)[: self.max_tokens + 1]
            if self.context:  # the text's own BOS gives way to the context, which starts with one
                n = len(self.context)
                self.stats[key] = self.model.token_statistics(self.context + ids[1:])[n - 1 :]
            else:
                self.stats[key] = self.model.token_statistics(ids)
            self.dirty = True
        return self.stats[key]

    def score_all(self, texts: Iterable[str], label: str = "") -> list[TokenStatistics]:
        texts = list(texts)
        todo = sum(_key(t) not in self.stats for t in texts)
        out, done, t0 = [], 0, time.perf_counter()
        for text in texts:
            new = _key(text) not in self.stats
            out.append(self.get(text))
            if new:
                done += 1
                if done % 50 == 0 or done == todo:
                    rate = done / (time.perf_counter() - t0)
                    print(
                        f"  [{Path(self.model.path).stem}] {label}: {done}/{todo} scored, "
                        f"{(todo - done) / rate / 60:.1f} min left",
                        file=sys.stderr,
                        flush=True,
                    )
                    self.save()
        self.save()
        return out


def main() -> None:
    import zeroshot_data as data

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--per-file", type=int, default=150, help="machine/human pairs per detection file")
    parser.add_argument("--per-domain", type=int, default=250, help="calibration texts per domain")
    parser.add_argument("--per-set", type=int, default=100, help="held-back human texts per set")
    parser.add_argument(
        "--chat-context",
        metavar="REQUEST",
        help="score each text as the assistant's answer to this user message (an experiment: "
        "an instruct model may find chat-model text likelier there)",
    )
    args = parser.parse_args()
    model = hallmark.load(args.model, n_threads=args.threads, watermark=None, policy="off")
    context = None
    if args.chat_context:
        context = model.chat_prompt_ids([{"role": "user", "content": args.chat_context}])
    cache = ScoreCache(model, args.max_tokens, context)
    for domain, texts in data.calibration_texts(args.per_domain).items():
        cache.score_all(texts, f"calibration {domain}")
    for s in data.machine_sets(args.per_file):
        cache.score_all(s.machine + s.human, s.name)
    for s in data.heldback_human_sets(args.per_set):
        cache.score_all(s.human, s.name)


if __name__ == "__main__":
    main()


def features_by_length(
    text: str, caches: dict[str, ScoreCache], lengths: Iterable[int]
) -> dict[int, dict[str, float]]:
    """{length: {"scorer:statistic": value}} for each calibrated length the text reaches, computed
    from each scorer's cached statistics of the whole text: the first k of them, k the tokens of the
    text's first `length` words, exactly what the detector scores for that length."""
    from hallmark.zeroshot.detector import count_words, word_prefix
    from hallmark.zeroshot.statistics import text_statistics

    words = count_words(text)
    out: dict[int, dict[str, float]] = {}
    for length in lengths:
        if length > words:
            break
        values = {}
        for name, cache in caches.items():
            stats = cache.get(text)
            k = len(cache.model.tokenize(word_prefix(text, length))) - 1  # scored tokens (not BOS)
            if k > len(stats) or k < 1:
                break  # beyond the cached tokens
            for statistic, value in text_statistics(stats[:k]).items():
                values[f"{name}:{statistic}"] = value
        else:
            out[length] = values
    return out
