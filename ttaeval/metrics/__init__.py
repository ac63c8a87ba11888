"""The math of set-level metrics, in one place.

- ``frechet``: the Frechet distance (float64, symmetric eigenvalue form) and mergeable statistics;
- ``formulas``: FAD, FAD-inf, per-clip FAD, KAD, KL, IS as pure typed functions on arrays;
- ``set_metrics``: the registered set metrics that read a run store's artefacts, and
  ``evaluate_set_metrics`` — what leaderboards, reports, ``ttaeval fad`` and protocols call;
- ``efficiency``: TTA-Bench's efficiency dimension (generation time, real-time factor, peak memory)
  as measured by the runner, and its per-system table.
"""

from ttaeval.metrics.frechet import GaussianStats, frechet_distance

__all__ = ["GaussianStats", "frechet_distance"]
