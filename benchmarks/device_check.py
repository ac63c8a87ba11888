"""The GPU path, checked end to end in one go; one PASS / FAIL / SKIP line per check.

1. ``release``: a folder laid out like the Resonate release (the 470M network and the 44.1 kHz VAE
   with random weights; a narrow vocoder and T5) generates a 10 s clip through the runner on the
   GPU in bfloat16, with its efficiency numbers. Without a GPU: the same layout at tiny widths on
   the CPU (the 470M network on 2 CPU cores would take most of the time budget).
2. ``grpo``: one GRPO step of a group of 8 on resonate-mini with the ``judge:mini`` reward, policy,
   reference and judge on the device (bfloat16 on a GPU).
3. ``shards``: a 2-rank torchrun ``ttaeval run`` gives the single process's numbers to the bit.
   Each rank binds ``cuda:LOCAL_RANK`` with NCCL, so this needs 2 GPUs; with fewer it runs on the
   CPU with gloo and says so.

    benchmarks/device_check.sh            # or: python benchmarks/device_check.py [--keep DIR]

Exit status 1 when any check fails. Needs the ``make test`` install (bigvgan for the vocoder).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the release folder is built as the tests build it

RESULTS: list[str] = []


def report(status: str, name: str, detail: str) -> None:
    line = f"{status} {name}: {detail}"
    RESULTS.append(line)
    print(line, flush=True)


def check(name: str, fn: Callable[[], str]) -> None:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # a check that breaks is a FAIL with its reason, and the others still run
        report("FAIL", name, f"{type(exc).__name__}: {exc}"[:600])
        return
    report("PASS", name, f"{detail} ({time.perf_counter() - start:.1f} s)")


def _suite(work: Path) -> str:
    suite = work / "prompts.txt"
    suite.write_text(
        "a dog barks twice, then a car passes by\nrain on a tin roof\na bell rings three times\n"
    )
    return str(suite)


def release_check(work: Path, device: str) -> str:
    from test_resonate_release import make_release

    from resonate_train.generator import ResonateGenerator
    from resonate_train.model import FluxAudio, FluxAudioConfig, fluxaudio_470m
    from resonate_train.model.mel_vae import MelVAE
    from ttaeval.runner import RunConfig, run
    from ttaeval.store import RunStore

    gpu = device.startswith("cuda")
    folder = work / "release"
    folder.mkdir()
    if gpu:
        make_release(folder, fluxaudio_470m(), MelVAE(), 1024, torch.float16)
        size = "470M network"
    else:
        tiny = {"text_dim": 32, "text_c_dim": 32, "text_seq_len": 8, "hidden_dim": 64, "num_heads": 2}
        net = FluxAudio(FluxAudioConfig(**tiny, depth=2, fused_depth=1, mlp_ratio=2.0, multiple_of=32))
        make_release(folder, net, MelVAE(width=16), 32)
        size = "tiny widths (no GPU)"
    dtype = "bfloat16" if gpu else "float32"
    gen = ResonateGenerator(path=folder, device=device, dtype=dtype, batch_size=1)
    out = work / "release_run"
    config = RunConfig(
        out=out, systems={"release": "resonate"}, suite=_suite(work), scorers=["signal"],
        duration=10.0, device=device, batch_size=1,
    )  # fmt: skip
    summary = run(config, generators={"release": gen})
    assert summary.generated == 3 and summary.all_ok, summary.errors or summary.scoring.errors
    with RunStore(out) as store:
        clips = store.clips()
    for _, clip in clips.iterrows():
        assert abs(clip["duration"] - 10.0) < 0.05 and clip["sample_rate"] == 44100, dict(clip)
    records = [json.loads(e) for e in clips["efficiency"]]
    assert all(r["device"].startswith("cuda" if gpu else "cpu") for r in records), records
    slowest = max(records, key=lambda r: r["seconds"])  # most often the first: it warms the kernels up
    warm = sorted(r["rtf"] for r in records if r is not slowest)
    clip, eff = clips.iloc[0], slowest
    mem = (
        f"{eff['peak_memory'] / 2**30:.2f} GiB {eff['memory_kind']}"
        if eff["peak_memory"] is not None
        else "n/a"
    )
    return (
        f"{size}, {dtype} on {eff['device']}: 3 clips of {clip['duration']:.2f} s at "
        f"{clip['sample_rate']} Hz, finite; RTF {warm[0]:.3f} and {warm[-1]:.3f} ({eff['rtf']:.3f} for "
        f"the slowest: the first call warms up), peak {mem}"
    )


def grpo_check(work: Path, device: str) -> str:
    from resonate_train.grpo import GRPOConfig, GRPOTrainer
    from resonate_train.system import RESONATE_MINI

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    cfg = GRPOConfig(
        base=str(RESONATE_MINI), rewards=["judge:mini"], prompts_per_step=1, group_size=8, rollout_batches=1,
        rollout_steps=10, steps=1, eval_every=0, device=device, dtype=dtype,
    )  # fmt: skip
    trainer = GRPOTrainer(cfg, work / "grpo", log=lambda _: None)
    record = trainer.train_step()
    policy_device = next(trainer.policy.parameters()).device
    judge = trainer.rewards.terms[0].scorer
    judge_device = next(judge._model.parameters()).device
    for key in ("loss", "kl", "grad_norm", "reward_mean"):
        assert math.isfinite(record[key]), (key, record)
    assert record["reward_failed"] == 0, record
    if device.startswith("cuda"):
        assert policy_device.type == "cuda" and judge_device.type == "cuda", (policy_device, judge_device)
    trainer.lock.release()
    return (
        f"group of 8, {dtype}: policy on {policy_device}, judge:mini on {judge_device}; "
        f"reward {record['reward_mean']:.3f} ± {record['reward_std']:.3f}, loss {record['loss']:.2e}, "
        f"step {record['seconds']:.1f} s"
    )


def shards_check(work: Path, gpus: int) -> str:
    device = "cuda" if gpus >= 2 else "cpu"
    common = [
        "--suite", "synth:demo", "--limit", "8", "--batch-size", "2", "--system", "clean=synth",
        "--system", "noise=synth,degrade=noise", "--scorer", "clap:mini", "--scorer", "signal",
        "--device", device, "--quiet",
    ]  # fmt: skip
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(paths)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    for args in ([*torchrun, "-m", "ttaeval", "run", "--out", str(work / "two")],
                 [sys.executable, "-m", "ttaeval", "run", "--out", str(work / "one")]):  # fmt: skip
        done = subprocess.run([*args, *common], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-1500:]
    exports = []
    for name in ("two", "one"):
        done = subprocess.run(
            [sys.executable, "-m", "ttaeval", "export", str(work / name), "--format", "json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-1500:]
        rows = json.loads(done.stdout)
        exports.append(
            sorted(json.dumps({k: v for k, v in r.items() if k != "source"}, sort_keys=True) for r in rows)
        )
    assert exports[0] == exports[1], "the sharded run's export differs from the single process's"
    where = (
        "NCCL, a GPU per rank"
        if gpus >= 2
        else f"gloo on the CPU: {gpus} CUDA device(s), NCCL needs one per rank"
    )
    return f"2 ranks ({where}): {len(exports[0])} clips, export identical to one process's"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="Write the work here and keep it (default: a temp folder).")
    args = parser.parse_args()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = "cuda" if gpus else "cpu"
    name = torch.cuda.get_device_name(0) if gpus else "none"
    print(
        f"device check: torch {torch.__version__}, {gpus} CUDA device(s) ({name}), "
        f"python {sys.version.split()[0]}"
    )
    if not gpus:
        report(
            "SKIP", "cuda", "no CUDA device: the checks below run on the CPU (release at tiny widths, fp32)"
        )
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="device_check_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        check("release", lambda: release_check(work, device))
        check("grpo", lambda: grpo_check(work, device))
        check("shards", lambda: shards_check(work, gpus))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    counts = {s: sum(r.startswith(s) for r in RESULTS) for s in ("PASS", "FAIL", "SKIP")}
    print("device check: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
