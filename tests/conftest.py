"""Shared fixtures. Tests never touch the network: the hub is off for every test."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: the cores go to the workers, not to each op
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


def _keep_freed_memory() -> None:
    """glibc maps each large block (every one of 32 MB and more) on its own and unmaps it when it is
    freed, so the next allocation faults its pages in again: the published-size models' activations
    spent much of their CPU in page faults (system time). Keep freed memory in the heap, in this process
    (``mallopt``) and in every process it starts (glibc's environment tunables)."""
    import ctypes

    os.environ.setdefault("MALLOC_MMAP_MAX_", "0")
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(16 << 30))
    libc = ctypes.CDLL(None)  # this process's own symbols, libc's among them
    if hasattr(libc, "mallopt"):  # glibc; elsewhere the variables are inert
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, int(os.environ["MALLOC_MMAP_MAX_"]))
        libc.mallopt(m_trim_threshold, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))


_keep_freed_memory()

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    # A suite started as a background job inherits Ctrl-C ignored, and so would the commands the
    # Ctrl-C tests start (Python keeps an ignored SIGINT): give them the terminal's default back.
    signal.signal(signal.SIGINT, signal.default_int_handler)

SHARED_DATA = Path(
    os.environ.get("TTAEVAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $TTAEVAL_SHARED_DATA); skipped when absent, an error under CI."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared data folder missing under CI: {SHARED_DATA}")
        pytest.skip(f"shared data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def weights_cache(request, tmp_path_factory) -> Path:
    """Where random model weights are kept keyed by their recipe's content
    (``helpers.random_protocol_weights(..., cache=)``): the pytest cache's ``d/ttaeval-weights``, shared
    by xdist workers and later sessions (``pytest --cache-clear`` empties it); a folder of this session
    when the cache plugin is off."""
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("ttaeval-weights") if cache is not None else tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_resonate(tmp_path_factory) -> Path:
    """A random resonate-mini network, narrower and shallower (the trainers' code paths, for less
    compute), with cheap sampling (1 s clips, 3 steps, 2 Griffin-Lim iterations) for trainer
    tests."""
    import dataclasses

    import torch

    from resonate_train.model import fluxaudio_mini
    from resonate_train.model.codec import MelCodec
    from resonate_train.model.fluxaudio import MINI_CONFIG
    from resonate_train.model.text import ClapMiniTextEncoder
    from resonate_train.system import ResonateSystem, SamplingDefaults

    torch.manual_seed(0)
    config = dataclasses.replace(MINI_CONFIG, hidden_dim=64, num_heads=2, depth=1, fused_depth=1)
    net = fluxaudio_mini(config).initialize_weights()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.02)
    system = ResonateSystem(
        net.eval(), ClapMiniTextEncoder(), MelCodec(griffin_lim_iters=2), SamplingDefaults(1.0, 3, 3.0)
    )
    system.set_empty_text()
    return system.save(tmp_path_factory.mktemp("base") / "mini")


# -- the fast tier (make check) ------------------------------------------------------------------
# tests/durations.json holds each test's measured seconds (setup + call + teardown; `make durations`
# writes it from a full run). A test measured above FAST_SECONDS is marked slow, so `make check`
# (-m "not slow") runs the rest; `make test` runs everything either way. A test not measured yet
# counts as fast.
DURATIONS = Path(__file__).with_name("durations.json")
FAST_SECONDS = 0.5
_measured: dict[str, float] = {}


def pytest_collection_modifyitems(config, items) -> None:
    import json

    if not DURATIONS.is_file():
        return
    seconds = json.loads(DURATIONS.read_text())
    for item in items:
        if seconds.get(item.nodeid, 0.0) > FAST_SECONDS:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report) -> None:
    if os.environ.get("TTAEVAL_RECORD_DURATIONS"):
        _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus) -> None:
    import json

    target = os.environ.get("TTAEVAL_RECORD_DURATIONS")
    if target and _measured and not hasattr(session.config, "workerinput"):  # the controller writes
        Path(target).write_text(json.dumps({k: round(v, 3) for k, v in sorted(_measured.items())}, indent=0))
