"""Optional published packages whose model code real backends use, how to install them, and how
to load local weights with them.

laion_clap pins numpy<2 and msclap / audiobox_aesthetics / frechet_audio_distance pull torchaudio,
which would replace a CPU torch with a CUDA build; so each is installed without its dependencies,
which the matching ttaeval extra brings instead.

Loading is local: a backend checks its weight files (``weights_file``) before importing anything,
and imports and builds inside ``hub_offline()`` — laion_clap fetches tokenizers from the Hugging
Face hub at import time, which on an air-gapped machine means minutes of retries.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

REFERENCE_PINS = {
    "laion_clap": ("laion", "laion_clap==1.1.7"),
    "msclap": ("msclap", "msclap==1.3.4"),
    "audiobox_aesthetics": ("aesthetics", "audiobox_aesthetics==0.0.4"),
    "torchopenl3": ("fad", "torchopenl3==1.0.1"),
    "hear21passt": ("passt", "hear21passt==0.0.26"),
}
"""Top-level package -> (ttaeval extra, pinned release installed with --no-deps)."""


def install_hint(package: str, extra: str | None = None) -> str:
    """The command that installs ``package`` for a backend."""
    extra_name, pin = REFERENCE_PINS.get(package, (extra, None))
    steps = [f"pip install 'ttaeval[{extra_name}]'"] if extra_name else []
    if pin:
        steps.append(f"pip install --no-deps {pin}")
    return " && ".join(steps) or f"pip install {package}"


def import_reference(module: str, backend: str) -> ModuleType:
    """Import a published package's module for ``backend``; one clear line when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{backend} needs {exc.name or module}: {install_hint(top)}") from None


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def weights_file(path: str | Path | None, where: str, hint: str) -> Path:
    """``path`` when it is a regular file (or a link to one); else FileNotFoundError naming it, with
    ``hint`` (what to pass instead). Called before a backend's package is imported."""
    if path is None or str(path) == "":
        raise FileNotFoundError(f"{where} checkpoint not given ({hint})")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{where} checkpoint not found: {path} ({hint})")
    if not path.is_file():
        raise FileNotFoundError(f"{where} checkpoint is not a file: {path} ({hint})")
    return path


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """The Hugging Face hub off for the block (a load of local files: no request, no retry), unless
    the user set HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE themselves (their choice stands).

    Sets both variables for libraries that read them at import, and ``huggingface_hub``'s own switch
    (read once, at its import; transformers asks it) if it is already imported; all restored after.
    """
    if any(v in os.environ for v in OFFLINE_VARIABLES):
        yield
        return
    before = sys.modules.get("huggingface_hub.constants")
    saved = before.HF_HUB_OFFLINE if before is not None else None
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    if before is not None:
        before.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for v in OFFLINE_VARIABLES:
            os.environ.pop(v, None)
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:  # imported in the block, it read the switch as on: off again
            constants.HF_HUB_OFFLINE = saved if before is not None else False


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' "Loading weights" progress bar off for the block unless stderr is a terminal: in
    a log it is carriage-return noise. Restored after."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on and not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
