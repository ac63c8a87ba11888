"""Named protocols run end to end through ``ttaeval run``: embedding scorers store their artefacts,
the registered set metrics read them, and the numbers equal the in-memory formulas, ``ttaeval fad``
and the published packages' own formulas on the same embeddings.

The models are the published architectures with random weights (no hub here): PANNs Cnn14,
VGGish, OpenL3, PaSST, and LAION-CLAP's HTSAT-tiny with a tiny RoBERTa.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from helpers import random_protocol_weights, reference_package
from ttaeval import load_audio
from ttaeval.cli import app
from ttaeval.embedders import get_embedder
from ttaeval.metrics import formulas
from ttaeval.metrics.set_metrics import SetMetricError, evaluate_set_metrics
from ttaeval.report.tables import leaderboard
from ttaeval.store import RunStore

SYSTEMS = {"clean": "synth", "noisy": "synth,degrade=noise,strength=2"}


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="400")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory, weights_cache):
    """`ttaeval synth export`'s suite, a reference folder of the first accuracy prompts, and random
    weights in each published layout (made once, kept in the weights cache)."""
    root = tmp_path_factory.mktemp("protocols")
    args = ["synth", "export", str(root / "suite"), "--limit", "40"]  # no test here uses more
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    random_protocol_weights(root, ("panns", "vggish"), cache=weights_cache)
    return root


def _reference_folder(world: Path, n: int, kind: str = "reference") -> Path:
    """The reference renderings (or with ``kind="audio"``, the prompts' own renderings) of the suite's
    first n accuracy prompts, named by prompt id."""
    import json

    ids = [p["id"] for p in json.loads((world / "suite" / "acc_prompt.json").read_text())[:n]]
    folder = world / f"{kind}_{n}"
    if not folder.exists():
        folder.mkdir()
        for pid in ids:
            shutil.copy(world / "suite" / kind / f"{pid}.wav", folder / f"{pid}.wav")
    return folder


def _run_args(world: Path, out: Path, n: int) -> list[str]:
    args = ["run", "--out", str(out), "--suite", str(world / "suite" / "acc_prompt.json"), "--limit", str(n)]
    args += ["--protocol", "audioldm-eval", "--weights", f"panns={world / 'panns.pth'}"]
    args += ["--weights", f"vggish={world / 'vggish.pth'}", "--batch-size", "8", "--quiet"]
    args += ["--reference", f"folder:{_reference_folder(world, n)}"]
    for name, spec in SYSTEMS.items():
        args += ["--system", f"{name}={spec}"]
    return args


def _board_csv(run: Path) -> str:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["leaderboard", str(run), "--format", "csv"])
    assert result.exit_code == 0, result.output
    return result.stdout


def _rows(db: Path) -> int:
    try:  # read-only: the poll never creates the file, and a store being set up reads as empty
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


@pytest.mark.slow
def test_audioldm_eval_runs_end_to_end_resumes_after_kill_9_and_matches_the_formulas(world, tmp_path):
    n = 12  # IS takes 10 splits
    straight = tmp_path / "straight"
    done = subprocess.run(
        [sys.executable, "-m", "ttaeval", *_run_args(world, straight, n)],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    board = pd.read_csv(io.StringIO(_board_csv(straight)))
    sets = board.set_index(["system", "metric"])["mean"]
    for system in SYSTEMS:
        for metric in ("FD", "KL", "KL_sigmoid", "IS"):
            assert np.isfinite(sets[(system, f"embed:panns/{metric}")]), (system, metric)
        assert sets[(system, "embed:vggish/FAD")] > 0
    assert board.set_index(["system", "metric"]).loc[("clean", "embed:panns/KL"), "n"] == n  # pairs

    # the protocol is named in the report's manifest, with its set metrics
    report = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["report", str(straight), "--out", str(tmp_path / "r")]
    )
    assert report.exit_code == 0, report.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "audioldm-eval@2" in text and "fd:embed:panns" in text and "embed:vggish/FAD" in text

    # killed with SIGKILL mid-run, then resumed: the same rows
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttaeval", *_run_args(world, killed, n)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while proc.poll() is None and _rows(killed / "run.sqlite") < 30:  # of 72 results
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "ttaeval", *_run_args(world, killed, n)],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert _board_csv(killed) == _board_csv(straight)

    # parity: the same numbers from the formulas, as the earlier protocol functions computed them, on
    # the outputs the store keeps ...
    with RunStore(straight) as store:
        ids = list(store.scorers()["scorer_id"])
        panns_id, vggish_id = (next(i for i in ids if name in i) for name in ("panns", "vggish"))
        logits, embeddings = (store.artefacts(panns_id, a) for a in ("logits", "audio_embedding"))
        frames = store.artefacts(vggish_id, "frames")

    def of(table, system):
        rows = table[table["system"] == system]
        return dict(zip(rows["prompt_id"], rows["array"])), np.stack(rows["array"])

    ref_logits, _ = of(logits, "reference")
    ref_emb, ref_frames = of(embeddings, "reference")[1], np.concatenate(of(frames, "reference")[1])
    for system in SYSTEMS:
        rows = logits[logits["system"] == system]
        assert len(rows) == n
        gen_logits = np.stack(rows["array"])
        paired_ref = np.stack([ref_logits[pid] for pid in rows["prompt_id"]])
        expected = {
            "embed:panns/FD": formulas.fad(of(embeddings, system)[1], ref_emb),
            "embed:vggish/FAD": formulas.fad(np.concatenate(of(frames, system)[1]), ref_frames),
            "embed:panns/IS": formulas.inception_score(gen_logits).mean,
            "embed:panns/KL": formulas.kl_audioldm(gen_logits, paired_ref, "softmax"),
            "embed:panns/KL_sigmoid": formulas.kl_audioldm(gen_logits, paired_ref, "sigmoid"),
        }
        for metric, value in expected.items():
            assert sets[(system, metric)] == pytest.approx(value, rel=1e-6), (system, metric)
        # audioldm-eval's own KL: torch's kl_div(log(gen + 1e-6), ref, sum) / n on softmax posteriors
        g, r = (
            torch.from_numpy(gen_logits).double().softmax(1),
            torch.from_numpy(paired_ref).double().softmax(1),
        )
        theirs = torch.nn.functional.kl_div((g + 1e-6).log(), r, reduction="sum").item() / n
        assert sets[(system, "embed:panns/KL")] == pytest.approx(theirs, rel=1e-6)

    # ... which are the embedders' on the clip files: the first clip of each system in memory
    panns = get_embedder("panns", checkpoint=world / "panns.pth")
    vggish = get_embedder("vggish", checkpoint=world / "vggish.pth")
    for system in (*SYSTEMS, "reference"):
        pid = logits[logits["system"] == system]["prompt_id"].iloc[0]
        if system == "reference":
            clip = load_audio(_reference_folder(world, n) / f"{pid}.wav")
        else:
            clip = load_audio(straight / "audio" / system / f"{pid}_0.wav")
        (ours,) = panns.outputs([clip])
        in_memory = {"logits": ours["logits"], "embedding": ours["audio_embedding"]}
        in_memory["frames"] = vggish.fad_samples([clip])
        for name, table in (("logits", logits), ("embedding", embeddings), ("frames", frames)):
            np.testing.assert_allclose(in_memory[name], of(table, system)[0][pid], rtol=1e-5, atol=1e-6)


def test_vggish_fad_through_the_store_equals_frechet_audio_distance_and_the_cli(world, tmp_path):
    """frechet_audio_distance's own statistics and distance (scipy sqrtm) on the VGGish frames the
    store keeps, and ``ttaeval fad`` on the same folders and store (40 clips: 160 frames, full-rank
    128-d)."""
    from ttaeval.folder_fad import folder_fad

    gen, ref = _reference_folder(world, 40, "audio"), _reference_folder(world, 40)
    vggish = get_embedder("vggish", checkpoint=world / "vggish.pth")
    ours = folder_fad(gen, ref, vggish, store_dir=tmp_path / "run").fad
    fad_module = _frechet_audio_distance_module()
    with RunStore(tmp_path / "run") as store:
        frames = store.artefacts(vggish.id, "frames")
    stats = [
        fad_module.FrechetAudioDistance.calculate_embd_statistics(
            None, np.concatenate(frames[frames["system"] == system]["array"].to_list()).astype(np.float64)
        )
        for system in ("generated", "reference")
    ]
    assert sum(len(a) for a in frames["array"]) == 320
    theirs = fad_module.FrechetAudioDistance.calculate_frechet_distance(None, *stats[0], *stats[1])
    assert ours == pytest.approx(theirs, rel=1e-6)
    args = ["fad", str(gen), str(ref), "--embedder", f"embed:vggish,checkpoint={world / 'vggish.pth'}"]
    args += ["--out", str(tmp_path / "run")]  # the embeddings above, read back by content
    cli = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert cli.exit_code == 0, cli.output
    assert float(cli.stdout.strip().splitlines()[-1]) == ours


def _frechet_audio_distance_module():
    """frechet_audio_distance's fad module (its encodec import stubbed: encodec needs torchaudio)."""
    reference_package("laion_clap")
    sys.modules.setdefault("encodec", types.SimpleNamespace(EncodecModel=None))
    reference_package("frechet_audio_distance")
    import frechet_audio_distance.fad as fad_module

    return fad_module


@pytest.mark.slow
def test_audiocaps_sam_runs_end_to_end(world, tmp_path, weights_cache):
    weights = random_protocol_weights(tmp_path, ("laion", "openl3", "passt"), cache=weights_cache)
    # KL pairs 2; 16 OpenL3 frames a system. No assertion depends on the count (each checks n == n,
    # finiteness, a clip's frame shape, or the formula on the same clips) and each clip costs a full
    # 10 s PaSST window and 16 OpenL3 frames, so two pairs of one system are enough.
    n = 2
    args = ["run", "--out", str(tmp_path / "run"), "--suite", str(world / "suite" / "acc_prompt.json")]
    args += ["--limit", str(n), "--protocol", "audiocaps-sam", "--quiet"]
    args += [f"--weights={k}={v}" for k, v in weights.items()]
    args += ["--reference", f"folder:{_reference_folder(world, n)}"]
    args += ["--system", "clean=synth"]
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    with RunStore(tmp_path / "run") as store:
        board = leaderboard(store, reference="reference", set_metrics=["fad:embed:openl3"])
        sets = evaluate_set_metrics(
            store, reference="reference", specs=["fad:embed:openl3", "kl:embed:passt,direction=gen_ref"]
        ).set_index(["system", "metric"])
        frames = store.artefacts(next(s for s in store.scorers()["scorer_id"] if "openl3" in s), "frames")
        logits = store.artefacts(next(s for s in store.scorers()["scorer_id"] if "passt" in s), "logits")
    assert set(board["metric"]) >= {"clap:laion/clap", "embed:openl3/FAD"}
    assert set(sets.index) == {("clean", "embed:openl3/FAD"), ("clean", "embed:passt/KL")}
    assert (sets["n"] == n).all() and np.isfinite(sets["mean"]).all()
    assert frames["array"].iloc[0].shape == (8, 1024)  # 4 s at a 0.5 s hop, centred; L and R
    # KL(gen || ref) on PaSST: the formula on the logits of each prompt's pair
    gen, ref = (logits[logits["system"] == s].sort_values("prompt_id") for s in ("clean", "reference"))
    assert list(gen["prompt_id"]) == list(ref["prompt_id"]) and len(gen) == n
    expected = formulas.kl_sam(np.stack(gen["array"]), np.stack(ref["array"]))
    assert sets.loc[("clean", "embed:passt/KL"), "mean"] == pytest.approx(expected, rel=1e-6)
    # ... which are the embedder's on the clip files (one clip in memory: a 10 s PaSST window each)
    clip = tmp_path / "run" / "audio" / "clean" / f"{gen['prompt_id'].iloc[0]}_0.wav"
    embed = get_embedder("passt", checkpoint=tmp_path / "passt.pt")
    np.testing.assert_allclose(embed.logits([load_audio(clip)])[0], gen["array"].iloc[0], rtol=1e-6)


def test_protocol_checks_come_before_any_audio_is_made(world, tmp_path):
    runner = CliRunner(env={"COLUMNS": "400"})
    base = ["run", "--out", str(tmp_path / "run"), "--suite", "synth:accuracy", "--system", "a=synth"]
    missing = runner.invoke(
        app, [*base, "--protocol", "audioldm-eval", "--weights", f"panns={world / 'panns.pth'}"]
    )
    assert missing.exit_code == 2 and "--weights vggish=PATH" in missing.output
    weights = ["--weights", f"panns={world / 'panns.pth'}", "--weights", f"vggish={world / 'vggish.pth'}"]
    no_ref = runner.invoke(app, [*base, "--protocol", "audioldm-eval", *weights])
    assert no_ref.exit_code == 2 and "--reference" in no_ref.output
    unknown = runner.invoke(app, [*base, "--scorer", "signal", "--set-metric", "fad:embed:vggish"])
    assert unknown.exit_code == 2 and "not among the scorers" in unknown.output
    assert not (tmp_path / "run" / "audio").exists()
    explain = runner.invoke(app, ["protocols", "--explain", "audioldm-eval"])
    assert "fd:embed:panns" in explain.stdout and "is:embed:panns" in explain.stdout


def _score(run: Path, folder: Path, system: str, scorer: str) -> None:
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["score", str(folder), "--out", str(run), "--system", system, "--scorer", scorer]
    )
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def folders(world):
    return _reference_folder(world, 6, "audio"), _reference_folder(world, 6)


def test_a_reference_of_one_clip_is_a_clear_error_and_no_number(folders, tmp_path):
    _, ref = folders
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(ref.glob("*.wav")), one)
    _score(tmp_path / "run", ref, "gen", "embed:mini")
    _score(tmp_path / "run", one, "reference", "embed:mini")
    with (
        RunStore(tmp_path / "run") as store,
        pytest.raises(SetMetricError, match="reference 'reference' has 1"),
    ):
        evaluate_set_metrics(store, reference="reference")
    out = CliRunner(env={"COLUMNS": "400"}).invoke(
        app, ["leaderboard", str(tmp_path / "run"), "--reference", "reference"]
    )
    assert out.exit_code == 2 and "at least 2 are needed" in out.output


def test_embeddings_of_different_models_are_refused_naming_both(folders, tmp_path):
    from ttaeval.backbones.clap_mini import HELDOUT_CHECKPOINT

    gen, ref = folders
    _score(tmp_path / "run", gen, "gen", "embed:mini")
    _score(tmp_path / "run", ref, "reference", f"embed:mini,checkpoint={HELDOUT_CHECKPOINT}")
    with RunStore(tmp_path / "run") as store:
        ids = sorted(store.scorers()["scorer_id"])
        with pytest.raises(SetMetricError, match="different embedding models") as err:
            evaluate_set_metrics(store, reference="reference", specs=["fad:embed:mini"])
    assert all(i in str(err.value) for i in ids)


def test_nan_embeddings_fail_the_clip_and_never_become_numbers(folders, tmp_path):
    gen, ref = folders
    _score(tmp_path / "run", gen, "gen", "embed:mini")
    _score(tmp_path / "run", ref, "reference", "embed:mini")
    with RunStore(tmp_path / "run") as store:
        fine = evaluate_set_metrics(store, reference="reference")
        assert np.isfinite(fine["mean"]).all()
        with store.transaction():  # a damaged artefact in the store
            row = store._db.execute("SELECT rowid, data FROM artefacts LIMIT 1").fetchone()
            bad = np.frombuffer(row[1], np.float32).copy()
            bad[3] = np.nan
            store._db.execute("UPDATE artefacts SET data=? WHERE rowid=?", (bad.tobytes(), row[0]))
        with pytest.raises(SetMetricError, match="NaN/Inf in the embeddings of"):
            evaluate_set_metrics(store, reference="reference")


def test_a_third_party_embedder_and_set_metric_plug_in_through_entry_points(tmp_path):
    plugin = tmp_path / "site"
    (plugin / "toy_embed").mkdir(parents=True)
    (plugin / "toy_embed" / "__init__.py").write_text(
        "from dataclasses import dataclass\n"
        "import numpy as np\n"
        "from ttaeval.embedders import EmbeddingScorer\n"
        "from ttaeval.metrics.set_metrics import SetMetric\n"
        "@dataclass\n"
        "class Toy(EmbeddingScorer):\n"
        "    backend = 'toy'\n"
        "    sample_rate = 16000\n"
        "    def embed_batch(self, clips):\n"
        "        out = []\n"
        "        for c in clips:\n"
        "            x = c.audio[0]\n"
        "            row = np.array([x.std(), np.abs(x).max()], np.float32)\n"
        "            out.append({'audio_embedding': row * (np.nan if c.prompt.id.endswith('03') else 1)})\n"
        "        return out\n"
        "@dataclass\n"
        "class Gap(SetMetric):\n"
        "    name = 'gap'\n"
        "    label = 'GAP'\n"
        "    artefact = 'audio_embedding'\n"
        "    higher_is_better = False\n"
        "    def compute(self, generated, reference):\n"
        "        return float(abs(np.mean(generated) - np.mean(reference)))\n"
    )
    dist = plugin / "toy_embed-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-embed\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[ttaeval.scorers]\nembed:toy = toy_embed:Toy\n\n[ttaeval.set_metrics]\ngap = toy_embed:Gap\n"
    )
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), env["PYTHONPATH"]])
    args = ["run", "--out", str(tmp_path / "run"), "--suite", "synth:accuracy", "--limit", "6", "--quiet"]
    args += ["--system", "a=synth", "--system", "ref=synth,seed_offset=1", "--reference", "ref"]
    args += ["--scorer", "embed:toy", "--set-metric", "gap:embed:toy"]
    result = subprocess.run([sys.executable, "-m", "ttaeval", *args], env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # the NaN clips failed, and say why
    assert "gave NaN/Inf in audio_embedding" in result.stderr
    board = subprocess.run(
        [sys.executable, "-m", "ttaeval", "leaderboard", str(tmp_path / "run"), "--format", "csv"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert board.returncode == 0, board.stderr
    row = pd.read_csv(io.StringIO(board.stdout)).set_index("metric").loc["embed:toy/GAP"]
    assert row["system"] == "a" and row["n"] == 5 and row["n_failed"] == 1 and np.isfinite(row["mean"])
    listed = subprocess.run(
        [sys.executable, "-m", "ttaeval", "scorers"], env=env, capture_output=True, text=True
    )
    assert "embed:toy" in listed.stdout and "gap" in listed.stdout


def test_score_with_a_reference_folder_prints_and_records_the_set_metrics(folders, tmp_path):
    gen, ref = folders
    runner = CliRunner(env={"COLUMNS": "400"})
    args = ["score", str(gen), "--out", str(tmp_path / "run"), "--system", "mine", "--scorer", "embed:mini"]
    no_ref = runner.invoke(app, [*args, "--set-metric", "fad:embed:mini"])
    assert no_ref.exit_code == 2 and "give --reference DIR" in no_ref.output
    assert not (tmp_path / "run").exists()  # refused before anything was read or written
    args += ["--reference", str(ref), "--set-metric", "fad:embed:mini", "--set-metric", "kad:embed:mini"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "embed:mini/FAD" in result.stdout and "embed:mini/KAD" in result.stdout
    board = runner.invoke(app, ["leaderboard", str(tmp_path / "run"), "--format", "csv"])
    rows = pd.read_csv(io.StringIO(board.stdout)).set_index(["system", "metric"])
    with RunStore(tmp_path / "run") as store:
        sets = evaluate_set_metrics(store, reference="reference", specs=["fad:embed:mini"])
    assert rows.loc[("mine", "embed:mini/FAD"), "mean"] == pytest.approx(sets["mean"].iloc[0], rel=1e-9)
    assert ("reference", "embed:mini/FAD") not in rows.index


def test_grouped_set_metrics_leave_out_groups_the_reference_does_not_cover(tmp_path):
    from ttaeval.runner import RunConfig, run

    first = RunConfig(
        out=tmp_path / "first", systems={"ref": "synth,seed_offset=1"}, suite="synth:accuracy",
        scorers=["signal"], limit=10,
    )  # fmt: skip
    assert run(first).all_ok
    with RunStore(tmp_path / "first") as store:
        groups = store.prompt_groups("event_count")
    covered = groups.value_counts().index[0]  # the reference covers one group only
    folder = tmp_path / "refs"
    folder.mkdir()
    for pid in groups[groups == covered].index:
        shutil.copy(tmp_path / "first" / "audio" / "ref" / f"{pid}_0.wav", folder / f"{pid}.wav")
    config = RunConfig(
        out=tmp_path / "run", systems={"a": "synth"}, suite="synth:accuracy", scorers=["embed:mini"],
        reference=f"folder:{folder}", limit=10,
    )  # fmt: skip
    run(config)  # the reference's missing files are recorded failures
    with RunStore(tmp_path / "run") as store, pytest.warns(UserWarning, match="left out for event_count"):
        board = leaderboard(store, by="event_count", reference="reference")
    fad = board[board["metric"] == "embed:mini/FAD"]
    assert set(fad["group"]) == {covered} and fad["n"].iloc[0] == (groups == covered).sum()


def test_default_set_metrics_name_scorers_whose_labels_hold_options(folders, tmp_path):
    gen, ref = folders
    for folder, system in ((gen, "gen"), (ref, "reference")):
        _score(tmp_path / "run", folder, system, "embed:mini,batch_size=4")  # a label with a comma
    with RunStore(tmp_path / "run") as store:
        sets = evaluate_set_metrics(store, reference="reference")
    assert set(sets["spec"]) == {"fad:embed:mini", "fad_inf:embed:mini", "kad:embed:mini"}
    assert np.isfinite(sets["mean"]).all()
