"""Reading model checkpoints without running pickled code, and building the modules they fill.

A ``.safetensors`` file is read as tensors; anything else goes through ``torch.load(weights_only=True)``,
which rebuilds only tensors and plain containers. A file that needs more (pickled classes or functions
— code that would run on load) is refused with the reason, never loaded with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SKIPPING = threading.local()


@contextlib.contextmanager
def skipped_init() -> Iterator[None]:
    """Build modules without drawing the random weights a strict checkpoint load then replaces:
    ``torch.nn.init``'s in-place initialisers leave their tensor as it is, in this thread, for the
    block (as transformers' ``no_init_weights`` does for its models). Use it only around a build
    followed by a strict ``load_state_dict``: whatever the checkpoint does not hold would be left
    unset."""
    _install_init_switch()
    before = getattr(_SKIPPING, "on", False)
    _SKIPPING.on = True
    try:
        yield
    finally:
        _SKIPPING.on = before


@functools.cache
def _install_init_switch() -> None:
    """Wrap each public in-place initialiser of ``torch.nn.init`` (once a process) so that it does
    nothing while this thread is inside :func:`skipped_init`, and what it did before otherwise."""
    import torch.nn.init as init

    def switchable(original):
        @functools.wraps(original)
        def initialise(tensor, *args, **kwargs):
            return tensor if getattr(_SKIPPING, "on", False) else original(tensor, *args, **kwargs)

        return initialise

    for name in dir(init):
        if name.endswith("_") and not name.startswith("_") and callable(getattr(init, name)):
            setattr(init, name, switchable(getattr(init, name)))


class CheckpointRefused(ValueError):
    """The checkpoint would run pickled code to load (or is not a checkpoint at all)."""


def load_checkpoint(path: str | Path) -> Any:
    """The checkpoint's content: a tensor dict for safetensors, else whatever the torch file holds
    in tensors and plain containers (dicts, lists, numbers, strings).

    Raises:
        FileNotFoundError: no such file.
        CheckpointRefused: naming the file and the reason, with what to do about it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends: the file wants to run code
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointRefused(
            f"{path}: refused: it cannot be read as plain tensors (torch.load weights_only=True): "
            f"{reason}. Where you trust its source, save its state dict as safetensors and point "
            "the scorer at that file."
        ) from None


def weights_digest(path: Path, length: int = 16) -> str:
    """sha256 of a weights file, or of a folder's files (names and contents): the id names weights
    by content, never by path."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() + b"\0" if f != path else b"")
        with f.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")


def layout_digest(roots: list[Path], text_suffixes: tuple[str, ...] = (".json",)) -> str:
    """A cheap digest of model folders: the content of their small text files (configs,
    tokenizers) and the names and sizes of their weight files, so retrained weights saved into
    the same folder name another model without hashing gigabytes (``weights_digest`` hashes all)."""
    digest = hashlib.blake2b(digest_size=8)
    for root in roots:
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.suffix in text_suffixes:
                digest.update(rel.encode() + f.read_bytes())
            elif f.suffix in WEIGHT_SUFFIXES:
                digest.update(f"{rel}:{f.stat().st_size}".encode())
    return digest.hexdigest()
