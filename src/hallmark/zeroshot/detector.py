"""The zero-shot detector: does a text look machine-generated to the scoring models, whoever wrote it?

Beside the watermark's exact verdict (which only speaks for hallmark's own watermark), this scores
the text with each scoring model of a `Calibration` (the shipped one: both shipped models), in one
forward pass each, computes the statistics of hallmark.zeroshot.statistics for each model, puts
them on a common scale and averages them, and compares the result with human texts of the same
length (hallmark.zeroshot.calibration). The answer is an assessment with an estimated p-value: how
rare the score is among human texts. It is a statistical estimate, not proof: human text unlike
the calibration's (a memorized classic, a template, a non-native writer's plain style) can score as
machine text, and a paraphrased or edited machine text can pass.

A text of fewer words than the calibration's shortest length is `too_short`. A text longer than
the longest calibrated length (256 words) is assessed in passages of that length, at most
MAX_PASSAGES of them, with a Bonferroni correction (`ZeroShotDetector.assess`).
"""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.errors import DetectionError, check_unicode
from hallmark.zeroshot import DEFAULT_ZS_FPR
from hallmark.zeroshot.calibration import SHIPPED, Calibration, Scorer
from hallmark.zeroshot.statistics import text_statistics

_WORD = re.compile(r"\S+")
# Passages of a long text assessed (4096 words with the shipped calibration): bounds a request's cost.
MAX_PASSAGES = 16
# Tokens scored per passage at most: 256 words of prose are 300-400 tokens; hostile text (256 long
# random strings) is cut here rather than refused.
PASSAGE_TOKENS = 1024
CAVEAT = (
    "a statistical estimate from human texts of other kinds, not proof; unlike the watermark's "
    "p-value it is never exact"
)


class Assessment(enum.StrEnum):
    LIKELY_MACHINE = "likely_machine"
    NOT_DETECTED = "not_detected"
    TOO_SHORT = "too_short"


@dataclass
class ZeroShotResult:
    assessment: Assessment
    words: int  # words in the text
    scored_words: int  # the words compared (the calibrated lengths reached), 0 when too short
    score: float | None  # the combined score: mean z-score of the features (higher: more machine-like)
    p_value: float | None  # estimated share of human texts of this length scoring at least as high
    fpr: float  # the requested false-positive rate
    estimated_fpr: float | None  # the rate flagging at p <= fpr has on the calibration's human texts
    message: str
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {value, z}
    scored_tokens: dict[str, int] = field(default_factory=dict)  # scorer -> tokens scored
    calibration: str = ""  # the calibration's id
    caveat: str = CAVEAT
    # Each passage assessed (one unless the text is longer than the longest calibrated length):
    # {start, end (characters), words, score, p_value}; `score` and `features` above are the best one's.
    passages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def likely_machine(self) -> bool:
        return self.assessment is Assessment.LIKELY_MACHINE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["assessment"] = str(self.assessment)
        return d


def word_prefix(text: str, words: int) -> str:
    """The text from its first word to the end of its `words`-th word: the passage the detector
    scores for a text compared at that length."""
    spans = [m.span() for _, m in zip(range(words), _WORD.finditer(text), strict=False)]
    return text[spans[0][0] : spans[-1][1]] if spans else ""


def count_words(text: str) -> int:
    return sum(1 for _ in _WORD.finditer(text))


def check_zs_fpr(fpr: object) -> None:
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not 0 < fpr < 1:
        raise DetectionError(f"the zero-shot fpr must be a number in (0, 1), got {fpr!r}")


class ZeroShotDetector:
    """Loads the calibration's scoring models once; `assess` may be called from several threads
    (each scoring model is used by one at a time)."""

    def __init__(
        self,
        calibration: Calibration | str | Path | None = None,
        n_threads: int | None = None,
        show_progress: bool = True,
    ):
        from hallmark.model import load

        self.calibration = (
            calibration if isinstance(calibration, Calibration) else Calibration.load(calibration or SHIPPED)
        )
        self.models = {}
        for scorer in self.calibration.scorers:
            model = load(
                scorer.name,
                n_ctx=PASSAGE_TOKENS,
                n_threads=n_threads,
                watermark=None,
                policy="off",
                show_progress=show_progress,
            )
            _check_scorer(scorer, model)
            self.models[scorer.name] = model
        self._locks = {name: threading.Lock() for name in self.models}

    def features(self, text: str) -> tuple[dict[str, float], dict[str, int]]:
        """The features of `text` (scored whole: cut it to a calibrated length first), and the
        tokens each scorer scored."""
        values, tokens = {}, {}
        for name, model in self.models.items():
            ids = model.tokenize(text)[:PASSAGE_TOKENS]  # a passage of odd "words" (random strings)
            with self._locks[name]:
                stats = model.token_statistics(ids)
            tokens[name] = len(stats)
            for statistic, value in text_statistics(stats).items():
                values[f"{name}:{statistic}"] = value
        return values, tokens

    def assess(self, text: str, fpr: float = DEFAULT_ZS_FPR) -> ZeroShotResult:
        """The assessment of `text` at false-positive rate `fpr`.

        A text up to the longest calibrated length (256 words) is one passage, compared at the
        longest length it reaches. A longer one is cut into passages of that length (at most
        MAX_PASSAGES; a tail too short to assess is left out) and each is assessed: the text's
        p-value is the smallest passage p-value times the number of passages (Bonferroni), so a
        machine-written part of a long document is found and `fpr` still holds for the whole.
        """
        if not isinstance(text, str):
            raise DetectionError(f"the text to assess must be a string, got {type(text).__name__}")
        check_unicode(text, "the text to assess", DetectionError)
        check_zs_fpr(fpr)
        cal = self.calibration
        spans = [m.span() for m in _WORD.finditer(text)]
        words = len(spans)
        if cal.length_index(words) is None:
            return ZeroShotResult(
                Assessment.TOO_SHORT,
                words,
                0,
                None,
                None,
                fpr,
                None,
                f"too short for a zero-shot assessment: {words} words, at least {cal.lengths[0]} needed",
                calibration=cal.calibration_id,
            )
        longest = cal.lengths[-1]
        passages = []
        for first in range(0, min(words, longest * MAX_PASSAGES), longest):
            index = cal.length_index(min(words - first, longest))
            if index is None:
                break  # a short tail
            length = cal.lengths[index]
            start, end = spans[first][0], spans[first + length - 1][1]
            values, tokens = self.features(text[start:end])
            z = cal.z_scores(values, index)
            score = float(z.mean())
            passages.append(
                Passage(start, end, length, score, cal.p_value(score, index), index, values, z, tokens)
            )
        best = min(passages, key=lambda x: x.p_value)
        k = len(passages)
        p = min(1.0, best.p_value * k)
        flagged = p <= fpr
        share = f"{p:.2%}" if p >= 0.0001 else f"{p:.1e}"
        verdict = "likely machine-generated" if flagged else "not detected as machine-generated"
        where = f" (its most machine-like passage of {k})" if k > 1 else ""
        message = f"{verdict} (zero-shot): about {share} of human texts score this high{where}"
        return ZeroShotResult(
            Assessment.LIKELY_MACHINE if flagged else Assessment.NOT_DETECTED,
            words,
            sum(x.words for x in passages),
            best.score,
            p,
            fpr,
            min(cal.decision_fpr(fpr / k, x.index) for x in passages) * k,
            message,
            {
                f: {"value": best.values[f], "z": float(zi)}
                for f, zi in zip(cal.features, best.z, strict=True)
            },
            {name: sum(x.tokens[name] for x in passages) for name in self.models},
            cal.calibration_id,
            passages=[x.to_dict() for x in passages],
        )


@dataclass
class Passage:
    start: int  # character offsets of the passage in the text, end exclusive
    end: int
    words: int
    score: float
    p_value: float
    index: int  # the calibrated length's index
    values: dict[str, float]
    z: Any
    tokens: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "words": self.words,
            "score": self.score,
            "p_value": self.p_value,
        }


def _check_scorer(scorer: Scorer, model: Any) -> None:
    """Refuse a scoring model that is not the one the calibration was made with."""
    size = Path(model.path).stat().st_size
    if model.fingerprint != scorer.fingerprint or size != scorer.file_size:
        raise DetectionError(
            f"the zero-shot calibration was made with {scorer.name} (tokenizer {scorer.fingerprint}, "
            f"{scorer.file_size} bytes) but {model.path} differs; "
            "recalibrate with bench/zeroshot_calibrate.py"
        )
