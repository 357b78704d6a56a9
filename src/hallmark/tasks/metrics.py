"""Task metrics: BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge-score), SQuAD exact match and F1.

The SQuAD functions follow the official v1.1 evaluation script: answers are normalised by lower-
casing and removing punctuation, articles (a, an, the) and extra whitespace; a prediction scores
the best match over all reference answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence


def bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF, 0-100 (sacrebleu defaults: 13a tokenisation, chrF with char n = 6)."""
    import sacrebleu

    refs = [list(references)]
    return {
        "bleu": sacrebleu.corpus_bleu(list(predictions), refs).score,
        "chrf": sacrebleu.corpus_chrf(list(predictions), refs).score,
    }


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure, 0-100, with Porter stemming (as in the XSum paper's setup)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for name in totals:
            totals[name] += scores[name].fmeasure
    n = max(len(predictions), 1)
    return {name: 100 * total / n for name, total in totals.items()}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def f1(prediction: str, answers: Sequence[str]) -> float:
    return max(_f1(prediction, a) for a in answers)


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 averaged over questions, 0-100 (the official script's scale)."""
    n = max(len(predictions), 1)
    pairs = list(zip(predictions, answers, strict=True))
    return {
        "exact_match": 100 * sum(exact_match(p, a) for p, a in pairs) / n,
        "f1": 100 * sum(f1(p, a) for p, a in pairs) / n,
    }
