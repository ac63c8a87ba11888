"""ttaeval: evaluation of text-to-audio systems — scorers, protocols, runs, leaderboards.

The public entry points: ``load_audio`` and ``Clip`` (audio), ``load_prompts`` and ``Prompt``
(suites), ``get_scorer`` (the scorer registry), ``frechet_distance`` (set metrics), ``RunStore``.
"""

from ttaeval.io.audio import AudioError, Clip, load_audio, save_audio
from ttaeval.io.prompts import Prompt, PromptError, load_prompts
from ttaeval.metrics.frechet import GaussianStats, frechet_distance
from ttaeval.records import MetricSpec, ScoreResult
from ttaeval.scorers import Scorer, get_scorer
from ttaeval.store import RunStore

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "Clip",
    "GaussianStats",
    "MetricSpec",
    "Prompt",
    "PromptError",
    "RunStore",
    "ScoreResult",
    "Scorer",
    "__version__",
    "frechet_distance",
    "get_scorer",
    "load_audio",
    "load_prompts",
    "save_audio",
]
