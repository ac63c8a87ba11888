"""Where heavy work runs: the device and precision knobs every model-holding component shares, and
the one place a process under ``torchrun`` binds its GPU and joins the process group.

    proc = setup_process("cuda")     # rank R of torchrun -> cuda:LOCAL_RANK, NCCL; alone -> cuda
    with autocast(proc.device, "bfloat16"):
        y = model(x)

``ttaeval run`` and every ``resonate_train`` trainer call :func:`setup_process` before they build a
model, so N ranks on one node land on N GPUs (not all on cuda:0) and collectives use NCCL between
GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16")
"""The precisions a ``dtype`` field accepts, by name (torch's dtypes of those names)."""

_PLAIN_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Device names known valid without asking torch (which a command that runs no model never imports)."""


@dataclass(frozen=True)
class Process:
    """This process's place in a (possibly distributed) job, and the device it computes on."""

    rank: int
    world: int
    local_rank: int
    device: torch.device


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    rank = int(os.environ.get("RANK", "0"))
    return rank, int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", str(rank)))


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """The device a process should use for ``device``.

    ``auto`` is the local GPU when there is one, else the CPU. Under torchrun (``local_rank`` given,
    or ``LOCAL_RANK`` set with ``WORLD_SIZE`` > 1) a CUDA device, with or without an index, becomes
    ``cuda:LOCAL_RANK``: one GPU per rank on a node. Asking for CUDA where there is none is an
    error naming the device, not a silent fall back to the CPU.
    """
    import torch

    text = str(device).strip().lower()
    if local_rank is None:
        _, world, local = dist_env()
        local_rank = local if world > 1 else None
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(text)
    if dev.type != "cuda":
        return dev
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = local_rank if local_rank is not None else (dev.index or 0)
    if index >= count:
        where = f"rank with LOCAL_RANK={local_rank}" if local_rank is not None else "this process"
        raise RuntimeError(f"device {device!r}: {where} needs cuda:{index}; {count} CUDA device(s) visible")
    return torch.device("cuda", index)


def check_device_name(device: str) -> str:
    """``device`` if torch can parse it (or it is ``auto``), else a ValueError naming it: a config
    is checked before any work, whether or not this machine has that device."""
    if not _PLAIN_DEVICE.fullmatch(str(device).strip().lower()):
        import torch

        try:
            torch.device(str(device).strip().lower())
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"device {device!r}: not a torch device ({exc})") from None
    return device


def backend_for(device: torch.device) -> str:
    """The collective backend between processes computing on ``device``: NCCL for GPUs, gloo else."""
    return "nccl" if device.type == "cuda" else "gloo"


def setup_process(device: str | torch.device = "auto") -> Process:
    """Bind this process to its device, then (with more than one process) join the process group.

    Call it before building any model: under torchrun, rank R on a node computes on
    ``cuda:LOCAL_RANK`` (``torch.cuda.set_device`` first, so libraries that use "the current
    device" agree), and the group's backend follows the device. Idempotent.
    """
    import torch

    rank, world, local = dist_env()
    dev = resolve_device(device, local if world > 1 else None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend_for(dev))
    return Process(rank, world, local, dev)


def resolve_dtype(dtype: str) -> torch.dtype:
    """A ``dtype`` field's torch dtype; an unknown name is an error listing the known ones."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def autocast(device: str | torch.device, dtype: str = "float32") -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass: ``torch.autocast`` in ``dtype`` on ``device`` (weights
    stay float32), or nothing for float32. bfloat16 runs on CPUs and GPUs alike; float16 is for GPUs."""
    import torch

    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch_dtype)


@contextlib.contextmanager
def no_autocast(device: str | torch.device) -> Iterator[None]:
    """Full precision inside an autocast region (log-densities, losses)."""
    import torch

    with torch.autocast(torch.device(device).type, enabled=False):
        yield


__all__ = [
    "DTYPES",
    "Process",
    "autocast",
    "backend_for",
    "check_device_name",
    "dist_env",
    "no_autocast",
    "resolve_device",
    "resolve_dtype",
    "setup_process",
]
