"""Scorer registry and spec strings: ``NAME[:BACKEND][,KEY=VALUE]...``.

The same spec names a scorer everywhere — the API (``get_scorer``), the CLI (``--scorer``), run
configs and training rewards. Backends are registered lazily, so an optional package is imported
only when its backend is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttaeval.registry import Registry, options_to_kwargs, parse_options
from ttaeval.scorers.base import MetricSpec, Scorer, ScoreResult

__all__ = [
    "SCORERS",
    "MetricSpec",
    "ScoreResult",
    "Scorer",
    "ScorerSpec",
    "get_scorer",
    "parse_spec",
    "register_scorer",
]

SCORERS: Registry[type[Scorer]] = Registry("scorer", entry_points="ttaeval.scorers")
"""Built-in backends, and those other distributions declare in the ``ttaeval.scorers`` entry-point
group (``"embed:mine" = "pkg.module:MineScorer"``: the name is ``NAME:BACKEND``)."""
DEFAULT_BACKENDS: dict[str, str] = {}
EXPLICIT_BACKENDS = {"embed"}
"""Names whose backend is always written (``embed:vggish``): embedding models differ in what they
measure, not only in how, so a bare ``embed`` names none of them."""


def register_scorer(
    name: str,
    backend: str,
    target: str | type[Scorer],
    *,
    default: bool = False,
    extra: str | None = None,
    requires: tuple[str, ...] = (),
) -> None:
    """Register ``name:backend``; ``target`` is the class or "module:Class" (imported on first use).

    The first backend of a name (or the one registered with ``default``) is what the bare name means,
    except for names in ``EXPLICIT_BACKENDS``."""
    SCORERS.register(f"{name}:{backend}", target, extra=extra, requires=requires)
    if name not in EXPLICIT_BACKENDS and (default or name not in DEFAULT_BACKENDS):
        DEFAULT_BACKENDS[name] = backend


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed spec string."""

    name: str
    backend: str
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        head = self.name if DEFAULT_BACKENDS.get(self.name) == self.backend else f"{self.name}:{self.backend}"
        return ",".join([head, *(f"{k}={v}" for k, v in self.options)])


def parse_spec(spec: str) -> ScorerSpec:
    """Parse ``NAME[:BACKEND][,KEY=VALUE]...``; the backend defaults to the name's default backend.

    Values may contain ``:`` and ``=`` (paths, URLs); a comma always separates options.
    """
    head, *parts = [p.strip() for p in spec.strip().split(",")]
    name, _, backend = head.partition(":")
    if not name:
        raise ValueError(f"empty scorer name in spec {spec!r}")
    if not backend:
        if name not in DEFAULT_BACKENDS:
            raise KeyError(
                f"unknown scorer {name!r}; available: {', '.join(sorted(DEFAULT_BACKENDS)) or 'none'}"
            )
        backend = DEFAULT_BACKENDS[name]
    return ScorerSpec(name, backend, parse_options(parts, spec, "scorer"))


def get_scorer(spec: str | ScorerSpec, **overrides: Any) -> Scorer:
    """Build a scorer from a spec string, e.g. ``get_scorer("signal,silence_dbfs=-50")``.

    Option values are converted to the types of the scorer's fields; unknown options are an error
    that lists the accepted ones. ``overrides`` are passed as they are (typed values).
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    cls = SCORERS.get(f"{parsed.name}:{parsed.backend}")
    kwargs = options_to_kwargs(cls, parsed.options, f"{parsed.name}:{parsed.backend}")
    kwargs.update(overrides)
    scorer = cls(**kwargs)
    scorer.spec = str(parsed)  # type: ignore[attr-defined]
    return scorer


register_scorer("signal", "builtin", "ttaeval.scorers.signal:SignalScorer")
register_scorer("clap", "mini", "ttaeval.scorers.clap_mini:ClapMiniScorer", requires=("torch",))
register_scorer(
    "clap", "mini-heldout", "ttaeval.scorers.clap_mini:HeldoutClapMiniScorer", requires=("torch",)
)
register_scorer("clap", "hf", "ttaeval.scorers.clap_hf:HFClapScorer", requires=("torch", "transformers"))
register_scorer(
    "clap", "laion", "ttaeval.scorers.clap_laion:LaionClapScorer", extra="laion", requires=("laion_clap",)
)
register_scorer(
    "aesthetics",
    "audiobox",
    "ttaeval.scorers.aesthetics:AudioboxAestheticsScorer",
    extra="aesthetics",
    requires=("audiobox_aesthetics",),
)
register_scorer(
    "clap", "msclap", "ttaeval.scorers.clap_msclap:MsClapScorer", extra="msclap", requires=("msclap",)
)
register_scorer("judge", "hf", "ttaeval.judge.hf:HFJudgeScorer", requires=("torch", "transformers"))
register_scorer("judge", "http", "ttaeval.judge.http:HTTPJudgeScorer")
register_scorer(
    "judge",
    "mini",
    "ttaeval.judge.hf:MiniJudgeScorer",
    default=True,
    requires=("torch", "transformers"),
)
register_scorer(
    "judge",
    "mini-v1",
    "ttaeval.judge.hf:MiniV1JudgeScorer",
    requires=("torch", "transformers"),
)
register_scorer(
    "judge",
    "mini-eval",
    "ttaeval.judge.hf:MiniEvalJudgeScorer",
    requires=("torch", "transformers"),
)
register_scorer("embed", "mini", "ttaeval.embedders.mini:MiniScorer", requires=("torch",))
register_scorer("embed", "vggish", "ttaeval.embedders.vggish:VGGishScorer", requires=("torch",))
register_scorer("embed", "panns", "ttaeval.embedders.panns:PannsScorer", requires=("torch",))
register_scorer(
    "embed", "openl3", "ttaeval.embedders.openl3:OpenL3Scorer", extra="fad", requires=("torchopenl3",)
)
register_scorer(
    "embed", "passt", "ttaeval.embedders.passt:PasstScorer", extra="passt", requires=("hear21passt", "timm")
)
register_scorer("embed", "encodec", "ttaeval.embedders.encodec:EncodecScorer", requires=("transformers",))
