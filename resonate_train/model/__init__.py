"""The FluxAudio flow-matching network and its checkpoints (text encoder and codec join it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from resonate_train.model.fluxaudio import (
    MINI_CONFIG,
    FluxAudio,
    FluxAudioConfig,
    fluxaudio_470m,
    fluxaudio_mini,
)

__all__ = [
    "MINI_CONFIG",
    "FluxAudio",
    "FluxAudioConfig",
    "fluxaudio_470m",
    "fluxaudio_mini",
    "load_network_weights",
    "read_state_dict",
]

_WRAPPERS = ("ema", "model_ema", "state_dict", "model", "network", "net", "weights")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: safetensors, or a torch file read with ``weights_only=True`` (no
    pickled code runs; a file that needs it is refused with the reason). Common wrappings are
    undone: a top-level ``ema``/``state_dict``/``model``/... dict, and a ``module.`` (DDP) or
    ``_orig_mod.`` (torch.compile) prefix."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: object = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError and friends: the file wants to run code
            raise ValueError(
                f"{path}: refused: it cannot be read as plain tensors (weights_only=True): {exc}. "
                "Convert it to safetensors where you trust its source."
            ) from None
    while isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        key = next((k for k in _WRAPPERS if k in sd and isinstance(sd[k], Mapping)), None)
        if key is None:
            raise ValueError(f"{path}: no state dict found (top-level keys: {', '.join(map(str, sd))})")
        sd = sd[key]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: not a state dict ({type(sd).__name__})")
    out = {}
    for name, value in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = value
    return out


def load_network_weights(
    model: FluxAudio, path: str | Path, state: Mapping[str, torch.Tensor] | None = None
) -> FluxAudio:
    """Load a checkpoint (``state``, when already read from ``path``) into ``model``; missing,
    unexpected or misshapen keys are an error naming them."""
    sd = dict(state) if state is not None else read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for what, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if names:
                parts.append(
                    f"{what} ({len(names)}): {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                )
        raise ValueError(f"{path}: does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd)
    return model
