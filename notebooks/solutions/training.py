"""Solutions to the exercises of notebooks/03_train_automix.ipynb (the checks use them when AUTOMIX_SOLUTIONS=1)."""
import statistics

import torch


def fallback_rate(alpha: float, margin: float, n: int = 200_000) -> float:
    """P(min(λ, 1 − λ) ≤ margin) for λ ~ Beta(α, α), by sampling."""
    lam = torch.distributions.Beta(alpha, alpha).sample((n,))
    return float((torch.minimum(lam, 1 - lam) <= margin).float().mean())


def median_last_k(history: list[dict], head: str, k: int) -> float:
    """The median top-1 of ``head`` over the last k evaluated epochs."""
    evaluated = [h["val"][head] for h in history if "val" in h]
    return statistics.median(evaluated[-k:])
