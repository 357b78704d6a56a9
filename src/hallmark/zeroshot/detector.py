"""The zero-shot detector: does a text look machine-generated to the scoring models, whoever wrote it?

Beside the watermark's exact verdict (which only speaks for hallmark's own watermark), this scores
the text with each scoring model of a `Calibration` (the shipped one: both shipped models), in one
forward pass each, computes the statistics of hallmark.zeroshot.statistics for each model, puts
them on a common scale and averages them, and compares the result with human texts of the same
length (hallmark.zeroshot.calibration). The answer is an assessment with an estimated p-value: how
rare the score is among human texts. It is a statistical estimate, not proof: human text unlike
the calibration's (a memorized classic, a template, a non-native writer's plain style) can score as
machine text, and a paraphrased or edited machine text can pass.

A text of fewer words than the calibration's shortest length is `too_short`. A text is compared at
the longest calibrated length it reaches, so of a text longer than the longest (256 words) only the
first 256 words are scored. That bounds a request's cost, and it keeps the p-value conformal: a
long text cut into passages would need a multiple-testing correction that the calibration's null
sample (a few hundred texts per length, p-values no smaller than 1/(n + 1)) cannot pay for, so
three passages or more could never be flagged at 1%.
"""

from __future__ import annotations

import enum
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hallmark.errors import DetectionError, check_rate, check_unicode
from hallmark.zeroshot import DEFAULT_ZS_FPR
from hallmark.zeroshot.calibration import SHIPPED, Calibration, Scorer
from hallmark.zeroshot.statistics import text_statistics

_WORD = re.compile(r"\S+")
# Tokens scored at most: 256 words of prose are 300-400 tokens; hostile text (256 long random
# strings) is cut here rather than refused.
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
    scored_words: int  # the words compared (the longest calibrated length reached), 0 when too short
    score: float | None  # the combined score: mean z-score of the features (higher: more machine-like)
    p_value: float | None  # estimated share of human texts of this length scoring at least as high
    fpr: float  # the requested false-positive rate
    estimated_fpr: float | None  # the rate flagging at p <= fpr has on the calibration's human texts
    message: str
    features: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {value, z}
    scored_tokens: dict[str, int] = field(default_factory=dict)  # scorer -> tokens scored
    calibration: str = ""  # the calibration's id
    caveat: str = CAVEAT

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
    check_rate(fpr, "the zero-shot fpr")


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
        """The assessment of `text` at false-positive rate `fpr`: its first `b` words are scored, `b`
        the longest calibrated length the text reaches, and compared with human texts of `b` words."""
        if not isinstance(text, str):
            raise DetectionError(f"the text to assess must be a string, got {type(text).__name__}")
        check_unicode(text, "the text to assess", DetectionError)
        check_zs_fpr(fpr)
        cal = self.calibration
        words = count_words(text)
        index = cal.length_index(words)
        if index is None:
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
        length = cal.lengths[index]
        values, tokens = self.features(word_prefix(text, length))
        z = cal.z_scores(values, index)
        score = float(z.mean())
        p = cal.p_value(score, index)
        flagged = p <= fpr
        share = f"{p:.2%}" if p >= 0.0001 else f"{p:.1e}"
        verdict = "likely machine-generated" if flagged else "not detected as machine-generated"
        where = f" (its first {length} of {words} words scored)" if length < words else ""
        return ZeroShotResult(
            Assessment.LIKELY_MACHINE if flagged else Assessment.NOT_DETECTED,
            words,
            length,
            score,
            p,
            fpr,
            cal.decision_fpr(fpr, index),
            f"{verdict} (zero-shot): about {share} of human texts of {length} words score this high{where}",
            {f: {"value": values[f], "z": float(zi)} for f, zi in zip(cal.features, z, strict=True)},
            tokens,
            cal.calibration_id,
        )


def _check_scorer(scorer: Scorer, model: Any) -> None:
    """Refuse a scoring model that is not the one the calibration was made with."""
    size = Path(model.path).stat().st_size
    if model.fingerprint != scorer.fingerprint or size != scorer.file_size:
        raise DetectionError(
            f"the zero-shot calibration was made with {scorer.name} (tokenizer {scorer.fingerprint}, "
            f"{scorer.file_size} bytes) but {model.path} differs; "
            "recalibrate with bench/zeroshot_calibrate.py"
        )
