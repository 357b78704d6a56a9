"""Zero-shot statistics of a text under one scoring model, each oriented so that higher means more
machine-like.

From the per-token `TokenStatistics` of one pass (hallmark.engine.scoring):
- `log_likelihood`: mean log p(token | context) (Gehrmann et al. 2019; Solaiman et al. 2019);
  sampled text is likelier under any language model than what people write.
- `log_rank`: minus the mean log-rank of each token (GLTR; Mitchell et al. 2023's baseline).
- `entropy`: minus the mean entropy of the predictive distribution; machine text sits where models
  are sure of the next token.
- `fast_detectgpt`: Fast-DetectGPT's analytic conditional probability curvature (Bao et al. 2024)
  with one model as both sampling and scoring model: (sum log p - sum E[log p]) / sqrt(sum Var[log p]),
  the expectations under the model's own next-token distribution. Divided here by sqrt(tokens) so
  that, like the others, it is a per-token mean and texts of different lengths compare (a human
  text's curvature grows with its length otherwise).
- `binoculars`: minus the Binoculars score (Hans et al. 2024) with one model as observer and
  performer: the text's log-perplexity over the model's own mean entropy (its cross-perplexity
  with itself). Perplexity in units of how uncertain the model expected to be: a ratio where
  Fast-DetectGPT takes a normalized difference.

All five come from the same logits; scoring a text costs one forward pass per model.
"""

from __future__ import annotations

import numpy as np

from hallmark.engine.scoring import TokenStatistics

STATISTICS = ("log_likelihood", "log_rank", "entropy", "fast_detectgpt", "binoculars")


def text_statistics(stats: TokenStatistics) -> dict[str, float]:
    """The statistics of a text from its per-token statistics (at least one token)."""
    n = len(stats)
    if n == 0:
        raise ValueError("a text needs at least one scored token")
    expected = -stats.entropy  # E[log p] under the model's distribution
    spread = float(np.sqrt(stats.logprob_var.sum()))
    curvature = float((stats.logprob - expected).sum()) / spread if spread > 0 else 0.0
    return {
        "log_likelihood": float(stats.logprob.mean()),
        "log_rank": -float(stats.log_rank.mean()),
        "entropy": -float(stats.entropy.mean()),
        "fast_detectgpt": curvature / float(np.sqrt(n)),
        "binoculars": float(stats.logprob.mean()) / max(float(stats.entropy.mean()), 1e-6),
    }
