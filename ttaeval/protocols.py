"""Formulas that metric protocols pin down, as pure functions over per-prompt scores.

- Robustness (TTA-Bench): each perturbed prompt's score divided by its source prompt's score
  (the source id is in the perturbed prompt's ``notes``), averaged per perturbation type.
- Fairness score FS (TTA-Bench): for groups of prompts (gender, age, language, from ``notes``),
  the mean over group pairs of 100 * |a - b| / max(a, b), with a, b the groups' mean scores.

The named protocols (``tta-bench``, ``audiocaps-sam``, ``audioldm-eval``), which also fix scorers,
sample rates and windows, build on these.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from ttaeval.prompts import Prompt

_TRAILING_NUMBER = re.compile(r"(\d+)$")


def source_id(perturbed: Prompt, ids: Iterable[str]) -> str | None:
    """The source prompt id of a robustness prompt: ``notes`` as an id, or as a prompt number.

    TTA-Bench's own files write ``"notes": "8"`` for ``prompt_0008``, and for synonyms
    ``"8; rattling->clattering, 4"`` (source number first).
    """
    raw = str(perturbed.attributes.get("notes") or "").strip()
    ids = list(ids)
    if raw in ids:
        return raw
    note = raw.split(";", 1)[0].strip()
    if note.isdigit():
        for pid in ids:
            m = _TRAILING_NUMBER.search(pid)
            if m and int(m.group(1)) == int(note):
                return pid
    return None


def robustness_ratios(scores: Mapping[str, float], prompts: Iterable[Prompt]) -> dict[str, tuple[float, int]]:
    """Per perturbation type: mean of score(perturbed) / score(source), and how many pairs.

    Pairs where either score is missing (NaN) or the source score is 0 are left out and not
    counted; a perturbation with no usable pair gets NaN.
    """
    prompts = list(prompts)
    ids = [p.id for p in prompts]
    ratios: dict[str, list[float]] = defaultdict(list)
    for p in prompts:
        kind = p.attributes.get("perturbation_type")
        if not kind:
            continue
        src = source_id(p, ids)
        a, b = scores.get(p.id, math.nan), scores.get(src, math.nan) if src else math.nan
        if math.isfinite(a) and math.isfinite(b) and b != 0:
            ratios[kind].append(a / b)
        else:
            ratios.setdefault(kind, [])
    return {k: (float(np.mean(v)) if v else math.nan, len(v)) for k, v in ratios.items()}


def fairness_score(group_means: Mapping[str, float]) -> float:
    """TTA-Bench's FS: mean over group pairs of 100 * |a - b| / max(a, b) (0 = perfectly fair).

    Groups with a missing mean are left out; fewer than two groups give NaN. Scores must be
    positive for the ratio to mean anything.
    """
    values = [v for v in group_means.values() if math.isfinite(v)]
    if any(v <= 0 for v in values):
        raise ValueError("fairness score needs positive group means (a ratio of scores)")
    pairs = list(itertools.combinations(values, 2))
    if not pairs:
        return math.nan
    return float(np.mean([100 * abs(a - b) / max(a, b) for a, b in pairs]))
