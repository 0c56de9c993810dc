"""Oracles shared by module 18's tests: input builders that do not call any task's code, so a
task's tests depend on that task only (conftest.py puts this folder on sys.path)."""
import numpy as np

from tinytorch.compression.prune import prunable_weights


def zero_fraction(model) -> float:
    "Fraction of exact zeros among the prunable weights, counted here rather than with the measure-sparsity task."
    weights = [w.data for _, w in prunable_weights(model)]
    return sum(int(np.count_nonzero(w == 0)) for w in weights) / sum(w.size for w in weights)


def oracle_prune(model, sparsity: float):
    """Global magnitude pruning by a full sort (ties: lower flat index first), masks stored: an input
    builder that does not call the magnitude-prune task."""
    weights = [w for _, w in prunable_weights(model)]
    scores = np.concatenate([np.abs(w.data.astype(np.float64)).ravel() for w in weights])
    keep = np.ones(scores.size, bool)
    keep[np.lexsort((np.arange(scores.size), scores))[:round(sparsity * scores.size)]] = False
    start = 0
    for w in weights:
        part = keep[start:start + w.size].reshape(w.shape)
        start += w.size
        w.data[~part] = 0
        w.mask = part.copy()
    return model
