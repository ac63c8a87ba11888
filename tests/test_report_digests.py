"""Committed reports cannot go stale: every weights digest a report under ``reports/`` cites (a
scorer id's ``weights=``, a system's ``checkpoint=``) must be the digest of a weight file the
repository ships today. Retrain a shipped model and keep its old report, and this fails, naming
both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resonate_train.generator import ResonateGenerator
from ttaeval.checkpoints import weights_digest

ROOT = Path(__file__).resolve().parents[1]
SCORER_WEIGHTS = ROOT / "ttaeval" / "synth" / "weights"
CHECKPOINTS = ROOT / "resonate_train" / "weights"
CITATION = re.compile(r"\b(weights|checkpoint)=([0-9a-f]{16})\b")


def shipped_digests() -> dict[str, str]:
    """Digest -> what it names, for every weight file and folder the repository ships, computed as
    the scorers and generators compute them for their ids."""
    found = {}
    for path in sorted(SCORER_WEIGHTS.iterdir()):
        if path.is_dir() or path.suffix == ".safetensors":
            found[weights_digest(path)] = str(path.relative_to(ROOT))
    for config in sorted(CHECKPOINTS.rglob("config.json")):  # resonate_mini, study2/grpo_clap_s0, ...
        folder = config.parent
        found[ResonateGenerator(path=folder).identity["checkpoint"]] = str(folder.relative_to(ROOT))
    return found


def citations(report: Path) -> set[tuple[str, str]]:
    return set(CITATION.findall(report.read_text(encoding="utf-8")))


REPORTS = sorted((ROOT / "reports").rglob("report.md"))


def test_there_are_committed_reports_citing_weights():
    assert REPORTS, "reports/ holds the worked examples"
    assert all(citations(r) for r in REPORTS)
    demo = citations(ROOT / "reports" / "demo" / "report.md")
    assert {kind for kind, _ in demo} == {"weights", "checkpoint"}  # scorers' and systems' weights


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: str(p.parent.name))
def test_every_weights_digest_a_report_cites_is_a_shipped_file_today(report):
    shipped = shipped_digests()
    stale = sorted(f"{kind}={digest}" for kind, digest in citations(report) if digest not in shipped)
    assert not stale, (
        f"{report.relative_to(ROOT)} cites weights no shipped file has any more: {', '.join(stale)}. "
        "Regenerate the report (its README line says how) after retraining a shipped model."
    )
