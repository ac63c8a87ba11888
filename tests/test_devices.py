"""One device helper for the runner and every trainer: rank R of torchrun binds cuda:LOCAL_RANK before
any model is built; NCCL between GPUs, gloo between CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ttaeval import devices
from ttaeval.devices import Process, autocast, backend_for, resolve_device, resolve_dtype, setup_process


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """A CPU machine that says it has two CUDA devices; records what set_device was asked."""
    bound: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: bound.append(torch.device(d)))
    return bound


def test_auto_is_the_cpu_on_a_machine_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert setup_process("auto") == Process(0, 1, 0, torch.device("cpu"))
    assert backend_for(torch.device("cpu")) == "gloo" and backend_for(torch.device("cuda", 1)) == "nccl"


def test_each_torchrun_rank_takes_its_local_gpu_whatever_index_the_config_names(monkeypatch, two_fake_gpus):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        for asked in ("auto", "cuda", "cuda:0", "CUDA:1"):
            assert resolve_device(asked) == torch.device("cuda", rank), asked
        assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=2 needs cuda:2; 2 CUDA device\(s\) visible"):
        resolve_device("cuda")


def test_a_single_process_keeps_the_index_it_was_given(monkeypatch, two_fake_gpus):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert setup_process("cuda:1").device == torch.device("cuda", 1)
    assert two_fake_gpus == [torch.device("cuda", 1)]  # bound before anything is built


def test_cuda_on_a_machine_without_one_is_an_error_naming_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"device 'cuda': this process needs cuda:0; 0 CUDA device"):
        resolve_device("cuda")


def test_dtype_names_are_checked_and_float32_means_no_autocast():
    assert resolve_dtype("bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype 'bf16': expected one of float32, bfloat16, float16"):
        resolve_dtype("bf16")
    with autocast("cpu", "float32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


class _Bound(Exception):
    """Raised by the stand-in helper: proves a caller went through it, and when."""


def test_runner_and_every_trainer_bind_the_device_through_the_one_helper_before_any_model(
    monkeypatch, tmp_path
):
    """Each caller's ``setup_process`` is ``ttaeval.devices.setup_process`` itself, and each calls
    it with its configured device before it loads a checkpoint or builds a network (the runner, once
    a scorer or system holds a model: here clap:mini)."""
    import resonate_train.dpo as dpo
    import resonate_train.grpo as grpo
    import resonate_train.pretrain as pretrain
    from resonate_train.system import ResonateSystem
    from ttaeval.runner import RunConfig, run

    for module in (grpo, dpo, pretrain):
        assert module.setup_process is devices.setup_process, module.__name__
    calls: list[tuple[str, str]] = []
    built: list[str] = []

    def helper(device: str = "auto") -> Process:
        calls.append(("setup", device))
        raise _Bound

    monkeypatch.setattr(ResonateSystem, "load", lambda *a, **k: built.append("load"))
    monkeypatch.setattr(pretrain, "fluxaudio_mini", lambda *a, **k: built.append("network"))
    monkeypatch.setattr(pretrain, "training_set", lambda *a, **k: built.append("data"))
    monkeypatch.setattr(devices, "setup_process", helper)
    for module in (grpo, dpo, pretrain):
        monkeypatch.setattr(module, "setup_process", helper)
    with pytest.raises(_Bound):
        run(RunConfig(tmp_path / "run", {"a": "synth"}, "synth:demo", scorers=["clap:mini"], device="cuda:1"))
    with pytest.raises(_Bound):
        grpo.GRPOTrainer(grpo.GRPOConfig(base="ckpt", device="cuda"), tmp_path / "g")
    with pytest.raises(_Bound):
        dpo.DPOTrainer(dpo.DPOConfig(base="ckpt", device="cpu"), tmp_path / "d")
    with pytest.raises(_Bound):
        pretrain.pretrain(pretrain.PretrainConfig(device="auto", steps=1), tmp_path / "p")
    assert calls == [("setup", "cuda:1"), ("setup", "cuda"), ("setup", "cpu"), ("setup", "auto")]
    assert built == []


RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist

    # two CUDA devices that are not there: what each rank binds, and which backend it asks for
    bound, asked = [], []
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 2
    torch.cuda.set_device = lambda d: bound.append(str(torch.device(d)))
    real_init = dist.init_process_group
    def init(backend=None, **kw):
        asked.append(backend)
        real_init("gloo", **kw)  # the collectives themselves run on the CPU
    dist.init_process_group = init

    from ttaeval.runner import RunConfig, run
    out = sys.argv[1]
    summary = run(RunConfig(out=out, systems={"a": "synth"}, suite="synth:demo", scorers=["signal"],
                            limit=4, batch_size=2, device="cuda"))
    rank = os.environ["RANK"]
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"rank": int(rank), "bound": bound, "backend": asked, "generated": summary.generated}, f)
    """
)


@pytest.mark.slow
def test_a_two_rank_torchrun_run_binds_rank_r_to_device_r(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = tmp_path / "run"
    done = subprocess.run([*cmd, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"run.rank{r}.json").read_text()) for r in (0, 1)]
    for r, got in enumerate(ranks):
        assert got["bound"] == [f"cuda:{r}"] and got["backend"] == ["nccl"], got
    assert sum(g["generated"] for g in ranks) == 4  # the work was shared, and merged into one store
    from ttaeval.store import RunStore

    with RunStore(out) as store:
        assert len(store.clips()) == 4
