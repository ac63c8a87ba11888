"""Reading model checkpoints without running pickled code.

A ``.safetensors`` file is read as tensors; anything else goes through ``torch.load(weights_only=True)``,
which rebuilds only tensors and plain containers. A file that needs more (pickled classes or functions
— code that would run on load) is refused with the reason, never loaded with ``weights_only=False``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


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
