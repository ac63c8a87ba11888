"""The released Resonate model from a folder laid out like the release: the FluxAudio network, the
44.1 kHz mel VAE, BigVGAN-v2 and FLAN-T5-large.

    RELEASE_DIR/
      Resonate_GRPO.pth | Resonate_PT.pth      FluxAudio (fluxaudio_m_44k), any common wrapping
      v1-44.pth                                the MMAudio VAE, 44k mode
      bigvgan_v2_44khz_128band_512x/           config.json + bigvgan_generator.pt
      flan-t5-large/                           tokenizer + T5 encoder (transformers layout)

Every file is checked before anything is generated: a missing one, a VAE of the 16 kHz mode, a
tensor of the wrong shape is an error naming the file and the key. Weights are read without
running pickled code. ``MMAudioCodec`` puts the VAE and the vocoder behind the codec interface
the mini world's ``MelCodec`` has (latents ``(B, L, 40)`` in the VAE's space, audio at 44,100 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resonate_train.model.mel_vae import SAMPLE_RATE, MelConverter, MelVAE, latent_length
from ttaeval.checkpoints import skipped_init

NETWORK_FILES = ("Resonate_GRPO.pth", "Resonate_PT.pth")
VAE_FILE = "v1-44.pth"
VOCODER_DIR = "bigvgan_v2_44khz_128band_512x"
TEXT_DIR = "flan-t5-large"


def is_release_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any((folder / n).is_file() for n in NETWORK_FILES)


def load_mel_vae(path: str | Path, device: str = "cpu") -> MelVAE:
    """The 44k mel VAE from ``v1-44.pth`` (or safetensors), its weights normalised as the release's
    ``remove_weight_norm`` does. A checkpoint of another mode (16k: 80 mels, 20 latents) or any
    other mismatch is a ValueError naming the file and the keys."""
    from resonate_train.model import read_state_dict

    state = read_state_dict(path)
    conv_in = state.get("encoder.conv_in.weight")
    with skipped_init():  # the checkpoint replaces every weight (or is refused below)
        vae = MelVAE(width=int(conv_in.shape[0])) if conv_in is not None and conv_in.ndim == 3 else MelVAE()
    own = vae.state_dict()
    if conv_in is not None and conv_in.shape[1:2] != own["encoder.conv_in.weight"].shape[1:2]:
        raise ValueError(
            f"{path}: encoder.conv_in.weight is {tuple(conv_in.shape)}: a VAE of {conv_in.shape[1]} mel "
            "bands (the 16 kHz mode has 80), not the 44.1 kHz mode's 128 the network was trained with"
        )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path}: does not fit the 44k mel VAE: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"mis-shaped {shapes[:5]}"
        )
    vae.load_state_dict(state)
    return vae.fuse().to(device).eval()


@dataclass
class MMAudioCodec:
    """Audio at 44.1 kHz <-> VAE latents ``(B, L, 40)`` (~43 a second): mel converter and VAE
    encoder one way (the posterior mean), VAE decoder and BigVGAN the other."""

    vae_path: str
    vocoder_path: str
    device: str = "cpu"
    sample_rate: int = SAMPLE_RATE
    _vae: Any = field(default=None, init=False, repr=False)
    _vocoder: Any = field(default=None, init=False, repr=False)
    _mel: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from resonate_train.model.vocoder import load_bigvgan

        self._vae = load_mel_vae(self.vae_path, self.device)
        self._vocoder = load_bigvgan(self.vocoder_path, self.device)
        self._mel = MelConverter().to(self.device)

    @property
    def latent_dim(self) -> int:
        return self._vae.decoder.conv_in.weight.shape[1]

    def frames(self, seconds: float) -> int:
        """Latents for ``seconds`` (10 s: 431)."""
        return latent_length(seconds)

    def to_dict(self) -> dict:
        return {"kind": "mmaudio", "vae_path": self.vae_path, "vocoder_path": self.vocoder_path}

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        mean, _ = self._vae.encode(self._mel(audio.float().to(self.device)))
        return mean.transpose(1, 2)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """``(B, L, 40)`` latents in the VAE's space (un-normalised) -> ``(B, samples)`` audio."""
        mel = self._vae.decode(latent.float().to(self.device).transpose(1, 2))
        audio = self._vocoder(mel)[:, 0]
        return audio[:, :samples] if samples else audio


def release_files(folder: str | Path, network: str | None = None) -> dict[str, Path]:
    """The release folder's files, every one checked to exist (FileNotFoundError naming those that do not)."""
    folder = Path(folder)
    names = [network] if network else [n for n in NETWORK_FILES if (folder / n).is_file()][:1]
    files = {
        "network": folder / (names[0] if names else NETWORK_FILES[0]),
        "vae": folder / VAE_FILE,
        "vocoder": folder / VOCODER_DIR,
        "text": folder / TEXT_DIR,
    }
    missing = [
        str(p) for k, p in files.items() if not (p.is_dir() if k in ("vocoder", "text") else p.is_file())
    ]
    if missing:
        raise FileNotFoundError(
            f"{folder}: not a complete Resonate release folder; missing {', '.join(missing)}"
        )
    return files


def network_config(state: dict[str, torch.Tensor]):
    """The FluxAudio configuration a state dict was saved from: ``fluxaudio_470m``'s when its shapes
    are that network's, else read off the shapes (smaller networks of the same family; the function
    is the released one)."""
    from resonate_train.model import FluxAudioConfig

    default = FluxAudioConfig()
    try:
        hidden, latent = state["audio_input_proj.0.weight"].shape[:2]
        ffn = state["audio_input_proj.2.w1.weight"].shape[0]
        head = state["joint_blocks.0.latent_block.attn.q_norm.weight"].shape[0]
        text_len, text_dim = state["empty_string_feat"].shape
    except KeyError as exc:
        raise ValueError(f"not a FluxAudio state dict: no {exc}") from None
    config = FluxAudioConfig(
        latent_dim=latent, text_dim=text_dim, text_c_dim=state["text_cond_proj.0.weight"].shape[1],
        text_seq_len=text_len, hidden_dim=hidden, num_heads=hidden // head,
        depth=len({k.split(".")[1] for k in state if k.startswith("joint_blocks.")}),
        fused_depth=len({k.split(".")[1] for k in state if k.startswith("fused_blocks.")}),
        mlp_ratio=1.5 * ffn / hidden, multiple_of=ffn,  # gives ffn_dim == ffn
    )  # fmt: skip
    same = all(
        getattr(config, f) == getattr(default, f) for f in ("latent_dim", "text_dim", "hidden_dim", "depth")
    )
    return (
        default if same and default.ffn_dim == ffn and config.fused_depth == default.fused_depth else config
    )


def load_official(folder: str | Path, device: str = "cpu", network: str | None = None):
    """A ``ResonateSystem`` from a release folder: FluxAudio (``fluxaudio_470m`` for the released
    weights) with the official function, FLAN-T5 as the release runs it, the VAE and BigVGAN; 10 s,
    25 steps, CFG 4.5 by default."""
    from resonate_train.model import FluxAudio, load_network_weights, read_state_dict
    from resonate_train.model.text import T5TextEncoder
    from resonate_train.system import ResonateSystem, SamplingDefaults

    files = release_files(folder, network)
    state = read_state_dict(files["network"])
    try:
        with skipped_init():  # the checkpoint replaces every weight (or is refused)
            net = FluxAudio(network_config(state))
    except ValueError as exc:
        raise ValueError(f"{files['network']}: {exc}") from None
    load_network_weights(net, files["network"], state)
    codec = MMAudioCodec(str(files["vae"]), str(files["vocoder"]), device)
    if codec.latent_dim != net.config.latent_dim:
        raise ValueError(
            f"{files['vae']}: {codec.latent_dim} latent channels, the network models {net.config.latent_dim}"
        )
    text = T5TextEncoder(str(files["text"]), max_tokens=net.config.text_seq_len, device=device)
    return ResonateSystem(
        net.to(device).eval(), text, codec, SamplingDefaults(duration=10.0, steps=25, guidance=4.5)
    )
