"""Frechet distance between Gaussians, and mergeable float64 statistics of embedding sets.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2), where tr sqrt(S1 S2) is the sum of the
square roots of the eigenvalues of sqrt(S1) S2 sqrt(S1) — a symmetric PSD matrix, so no complex
parts and no ``scipy.linalg.sqrtm`` (whose results have regressed across scipy releases). With a
Cholesky factor S1 = L L^T, L^T S2 L has the same eigenvalues and is cheaper to form (two
triangular products); a singular S1 (fewer samples than dimensions) falls back to the symmetric
square root from ``eigh``. From the samples themselves (``frechet_distance_of_samples``) the trace is
the nuclear norm of an ``(n1, n2)`` matrix and no ``(d, d)`` matrix is formed: far cheaper when both
sets have fewer samples than dimensions (a few hundred 2048-d PANNs embeddings: milliseconds, not
seconds).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
from scipy.linalg import blas


def _as_float64(a: np.ndarray, ndim: int, what: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN/Inf")
    return arr


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = scipy.linalg.eigh(s, driver="evd")
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(S1 S2) for symmetric PSD S1, S2, in float64."""
    try:
        root = scipy.linalg.cholesky(sigma1, lower=True, check_finite=False)
        # L^T S2 L with two triangular products (half the flops of two general ones)
        right = blas.dtrmm(1.0, root, sigma2, side=1, lower=1)
        m = blas.dtrmm(1.0, root, right, side=0, lower=1, trans_a=1)
    except np.linalg.LinAlgError:
        root = _sqrt_psd(sigma1)
        m = root @ sigma2 @ root
    eig = scipy.linalg.eigvalsh((m + m.T) / 2, driver="evr", check_finite=False)
    return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def frechet_distance_of_samples(x1: np.ndarray, x2: np.ndarray) -> float:
    """``frechet_distance`` of the Gaussian fits (mean, unbiased covariance) of two sample sets
    ``(n1, d)`` and ``(n2, d)``, from the samples, in float64, with no ``(d, d)`` matrix: O(n1 n2 d)
    instead of O(d^3). With C the centred samples, S1 S2 = C1^T (C1 C2^T) C2 / ((n1 - 1)(n2 - 1)) has
    the non-zero eigenvalues of A A^T, A = C1 C2^T / sqrt((n1 - 1)(n2 - 1)), so tr sqrt(S1 S2) is the
    sum of A's singular values (and no square roots of rounding noise in the null directions of
    singular covariances). Equal to the statistics' distance up to rounding; the way when both sets
    have fewer samples than dimensions. Warns as ``GaussianStats.cov`` does for each set with n <= d.
    """
    x1, x2 = _as_float64(x1, 2, "x1"), _as_float64(x2, 2, "x2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"shape mismatch: {x1.shape} and {x2.shape} samples")
    for x in (x1, x2):
        if len(x) < 2:
            raise ValueError(f"a covariance needs at least 2 embeddings, have {len(x)}")
        if len(x) <= x.shape[1]:
            _warn_singular(len(x), x.shape[1], stacklevel=3)
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    c1, c2 = x1 - mu1, x2 - mu2
    n1, n2 = len(x1) - 1, len(x2) - 1
    diff = mu1 - mu2
    terms = float(diff @ diff + np.einsum("ij,ij->", c1, c1) / n1 + np.einsum("ij,ij->", c2, c2) / n2)
    trace_sqrt = float(np.sum(scipy.linalg.svdvals((c1 @ c2.T) / np.sqrt(n1 * n2), check_finite=False)))
    return _rounded(terms, trace_sqrt)


def _rounded(terms: float, trace_sqrt: float) -> float:
    """terms - 2 tr sqrt(S1 S2), exactly 0 within float64 rounding of zero."""
    value = terms - 2.0 * trace_sqrt
    rounding = 64 * np.finfo(np.float64).eps * max(terms, 1.0)
    return 0.0 if value < rounding else float(value)


def _warn_singular(count: int, dim: int, stacklevel: int) -> None:
    warnings.warn(
        f"{count} embeddings of dimension {dim}: the covariance is singular (n <= d); "
        "Frechet distances from it are biased and not comparable across set sizes",
        stacklevel=stacklevel + 1,
    )


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

    Args:
        mu1, mu2: means, shape ``(d,)``.
        sigma1, sigma2: covariances, shape ``(d, d)``, symmetric PSD (singular is fine).

    Returns:
        The distance, >= 0. A result within float64 rounding of zero (relative to the size of
        the terms, as for a set against itself) is returned as exactly 0.
    """
    mu1, mu2 = _as_float64(mu1, 1, "mu1"), _as_float64(mu2, 1, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, 2, "sigma1"), _as_float64(sigma2, 2, "sigma2")
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}"
        )
    diff = mu1 - mu2
    terms = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2))
    return _rounded(terms, trace_sqrt_product(sigma1, sigma2))


@dataclass
class GaussianStats:
    """Streaming, mergeable float64 sums of an embedding set: count, sum, sum of outer products.

    ``update`` takes ``(n, d)`` batches (float16/32 input is promoted to float64 before summing);
    ``merge`` adds another set's sums (other processes, other shards); ``mean``/``cov`` give the
    statistics (unbiased covariance, n - 1).
    """

    dim: int
    count: int = 0
    total: np.ndarray = field(default=None)  # type: ignore[assignment]
    outer: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.total is None:
            self.total = np.zeros(self.dim, dtype=np.float64)
        if self.outer is None:
            self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray) -> GaussianStats:
        emb = _as_float64(embeddings, 2, "embeddings")
        stats = cls(emb.shape[1])
        stats.update(emb)
        return stats

    def update(self, embeddings: np.ndarray) -> None:
        emb = _as_float64(embeddings, 2, "embeddings")
        if emb.shape[1] != self.dim:
            raise ValueError(f"embeddings have dimension {emb.shape[1]}, these statistics {self.dim}")
        self.count += emb.shape[0]
        self.total += emb.sum(axis=0)
        self.outer += emb.T @ emb

    def merge(self, other: GaussianStats) -> GaussianStats:
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.count += other.count
        self.total += other.total
        self.outer += other.outer
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no embeddings")
        return self.total / self.count

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 embeddings, have {self.count}")
        if self.count <= self.dim:
            _warn_singular(self.count, self.dim, stacklevel=2)
        mu = self.mean
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return (cov + cov.T) / 2

    def frechet_distance(self, other: GaussianStats) -> float:
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)
