"""Checkpoints are read as tensors only (issue 10): safetensors, or torch files through
``weights_only=True``; a file that would run pickled code on load is refused and runs nothing."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from ttaeval.checkpoints import CheckpointRefused, load_checkpoint


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def malicious_checkpoint(path, marker) -> None:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(str(marker))}, path)


def test_plain_and_safetensors_checkpoints_load(tmp_path):
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "epoch": 3, "cfg": {"a": [1, 2.5, "x"]}}, tmp_path / "a.pt"
    )
    assert load_checkpoint(tmp_path / "a.pt")["cfg"] == {"a": [1, 2.5, "x"]}
    save_file({"w": torch.ones(2)}, str(tmp_path / "b.safetensors"))
    assert torch.equal(load_checkpoint(tmp_path / "b.safetensors")["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    from ttaeval.scorers.clap_laion import read_checkpoint

    marker = tmp_path / "pwned"
    malicious_checkpoint(tmp_path / "evil.pt", marker)
    for load in (load_checkpoint, read_checkpoint):
        with pytest.raises(CheckpointRefused, match=r"evil\.pt: refused: .*weights_only=True.*safetensors"):
            load(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the control: unpickling it does run code
    assert marker.exists()


def test_every_torch_load_in_the_packages_is_weights_only():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    calls, offenders = 0, []
    for path in [*(root / "ttaeval").rglob("*.py"), *(root / "resonate_train").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                calls += 1
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert calls >= 5 and not offenders, offenders


def test_modules_built_for_a_checkpoint_skip_their_random_init_in_this_thread_only():
    """Inside ``skipped_init`` no random weights are drawn (the generator does not move) and a strict
    load gives the checkpoint's module; another thread meanwhile initialises as usual."""
    import threading

    from ttaeval.checkpoints import skipped_init

    def build():
        return torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))

    torch.manual_seed(0)
    source = build()
    state = torch.random.get_rng_state()
    others: list[torch.Tensor] = []
    with skipped_init():
        built = build()
        assert torch.equal(torch.random.get_rng_state(), state)  # nothing drawn
        thread = threading.Thread(target=lambda: others.append(torch.nn.Linear(512, 512).weight.detach()))
        thread.start()
        thread.join()
    assert not torch.equal(torch.random.get_rng_state(), state)  # the other thread drew its weights
    bound = 1 / 512**0.5  # torch's kaiming-uniform bound for a Linear of 512 inputs
    assert 0.99 * bound < others[0].abs().max() <= bound
    built.load_state_dict(source.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), source.state_dict().values()))
    after = torch.random.get_rng_state()
    build()  # after the block, this thread's initialisers draw again
    assert not torch.equal(torch.random.get_rng_state(), after)
