"""Optional published packages whose model code real backends use, and how to install them.

laion_clap pins numpy<2 and msclap / audiobox_aesthetics / frechet_audio_distance pull torchaudio,
which would replace a CPU torch with a CUDA build; so each is installed without its dependencies,
which the matching ttaeval extra brings instead.
"""

from __future__ import annotations

import importlib
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
