"""Audio embedders for set metrics (FAD and its family): clips in, ``(n, dim)`` float32 out.

One small class per embedding model (like fadtk's model loaders), registered lazily by name:
``mini`` (clap-mini), ``panns`` (Cnn14, 2048-d, with 527 class logits for KL/IS), ``vggish``
(128-d per 0.96 s example: FAD statistics over examples, as the FAD paper), ``encodec`` (encoder
frames before quantisation), ``openl3`` (stable-audio-metrics' FD embedding), ``passt`` (its KL
logits), ``clap`` (any CLAP scorer backend's audio embedding). Every embedder is deterministic.
"""

from __future__ import annotations

import hashlib
from abc import ABC
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ttaeval.audio import Clip, prepare
from ttaeval.frechet import GaussianStats
from ttaeval.registry import Registry
from ttaeval.scorers.clap_common import weights_digest
from ttaeval.setmetrics import fad


class Embedder(ABC):
    """Turns clips into embeddings; the caller's clips are converted to its rate and channels.

    ``per_frame`` embedders (VGGish) give several rows per clip; set metrics then use every frame as
    a sample (``fad_samples``), and ``embed`` gives each clip's mean frame.
    """

    name: ClassVar[str]
    sample_rate: ClassVar[int]
    channels: ClassVar[int] = 1
    per_frame: ClassVar[bool] = False

    def identity(self) -> dict[str, object]:
        """Everything that changes the embeddings (weights by digest); enters ``id``."""
        return {}

    @property
    def id(self) -> str:
        """The embedder's full identity: caches of its outputs are keyed on it."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.identity().items()))
        return self.name + (f",{opts}" if opts else "")

    def embed(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(len(clips), dim)`` float32 embeddings, one per clip."""
        if self.per_frame:
            frames = self.embed_frames(clips)
            return np.stack(
                [f.mean(axis=0) if len(f) else np.full(f.shape[1], np.nan) for f in frames]
            ).astype(np.float32)
        out = self.embed_prepared(self._prepare(clips))
        if out.ndim != 2 or out.shape[0] != len(clips):
            raise RuntimeError(f"{self.name} returned shape {out.shape} for {len(clips)} clips")
        return out.astype(np.float32)

    def embed_frames(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        """One ``(frames, dim)`` array per clip; clip-level embedders give one frame each."""
        if not self.per_frame:
            return [row[None] for row in self.embed(clips)]
        return [f.astype(np.float32) for f in self.frames_prepared(self._prepare(clips))]

    def fad_samples(self, clips: Sequence[Clip]) -> np.ndarray:
        """The rows FAD statistics are computed from: frames for per-frame embedders, else clips."""
        return np.concatenate(self.embed_frames(clips)) if self.per_frame else self.embed(clips)

    def _prepare(self, clips: Sequence[Clip]) -> list[Clip]:
        return [prepare(c, self.sample_rate, self.channels) for c in clips]

    def embed_prepared(self, clips: Sequence[Clip]) -> np.ndarray:
        """Embed clips already at ``sample_rate``/``channels`` (clip-level embedders)."""
        raise NotImplementedError

    def frames_prepared(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        """Frame embeddings of prepared clips (per-frame embedders)."""
        raise NotImplementedError


class PannsEmbedder(Embedder):
    """PANNs Cnn14: 2048-d clip embeddings (``fc1`` after ReLU) and 527 AudioSet logits.

    ``variant`` "16k" (Cnn14_16k_mAP=0.438.pth, audioldm-eval's) or "32k" (Cnn14_mAP=0.431.pth). A
    clip is embedded whole, as audioldm-eval and frechet_audio_distance do.
    """

    name = "panns"

    def __init__(
        self, checkpoint: str | None = None, variant: str = "16k", batch_size: int = 8, device: str = "cpu"
    ):
        from ttaeval.backbones.panns import CONFIGS, load_cnn14

        if variant not in CONFIGS:
            raise ValueError(f"panns variant must be one of {sorted(CONFIGS)}, got {variant!r}")
        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"panns checkpoint not found: {checkpoint} (checkpoint=PATH to Cnn14_16k_mAP=0.438.pth "
                "or Cnn14_mAP=0.431.pth)"
            )
        self.config = CONFIGS[variant]
        self.sample_rate = self.config.sample_rate  # type: ignore[misc]
        self.model = load_cnn14(checkpoint, self.config, device)
        self.batch_size, self.device = batch_size, device
        self._identity = {"variant": variant, "weights": weights_digest(Path(checkpoint))}

    def identity(self) -> dict[str, object]:
        return self._identity

    def outputs(self, clips: Sequence[Clip]) -> dict[str, np.ndarray]:
        """``{"embedding": (n, 2048), "logits": (n, 527)}``; clips are run one by one when their
        lengths differ (no padding enters a clip's statistics)."""
        import torch

        prepared = self._prepare(clips)
        batches = _same_length_batches(prepared, self.batch_size)
        out: dict[str, list[np.ndarray]] = {"embedding": [], "logits": []}
        with torch.inference_mode():
            for idx in batches:
                wave = torch.from_numpy(np.stack([prepared[i].audio[0] for i in idx])).to(self.device)
                result = self.model(wave)
                for key in out:
                    out[key].append(result[key].float().cpu().numpy())
        order = np.argsort(np.concatenate(batches))
        return {k: np.concatenate(v)[order] for k, v in out.items()}

    def embed_prepared(self, clips: Sequence[Clip]) -> np.ndarray:
        return self.outputs(clips)["embedding"]

    def logits(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(n, 527)`` AudioSet logits (sigmoid: the clip-wise posteriors) for KL and IS."""
        return self.outputs(clips)["logits"]


def _same_length_batches(clips: Sequence[Clip], batch_size: int) -> list[np.ndarray]:
    """Indices of clips grouped by length (stable order), in batches of at most ``batch_size``."""
    lengths = np.array([c.num_samples for c in clips])
    batches: list[np.ndarray] = []
    current: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        if current and (len(current) == batch_size or lengths[current[0]] != lengths[i]):
            batches.append(np.array(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.array(current))
    return batches


class VGGishEmbedder(Embedder):
    """VGGish as FAD uses it: 128-d per 0.96 s example, no PCA, no final ReLU (``final_relu``)."""

    name = "vggish"
    sample_rate = 16_000
    per_frame = True

    def __init__(
        self,
        checkpoint: str | None = None,
        final_relu: bool = False,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        from ttaeval.backbones.vggish import load_vggish

        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"vggish checkpoint not found: {checkpoint} (checkpoint=PATH to vggish-10086976.pth)"
            )
        self.model = load_vggish(checkpoint, final_relu, device)
        self.batch_size, self.device = batch_size, device
        self._identity = {"final_relu": final_relu, "weights": weights_digest(Path(checkpoint))}

    def identity(self) -> dict[str, object]:
        return self._identity

    def frames_prepared(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        import torch

        from ttaeval.backbones.vggish import log_mel_examples

        examples = [log_mel_examples(c.audio[0]) for c in clips]
        flat = np.concatenate(examples)
        out = []
        with torch.inference_mode():
            for s in range(0, len(flat), self.batch_size):
                x = torch.from_numpy(flat[s : s + self.batch_size, None]).to(self.device)
                out.append(self.model(x).float().cpu().numpy())
        emb = np.concatenate(out) if out else np.zeros((0, 128), np.float32)
        return np.split(emb, np.cumsum([len(e) for e in examples])[:-1])


class EncodecEmbedder(Embedder):
    """EnCodec's encoder output before quantisation, one frame per hop (75 Hz, 128-d for
    ``facebook/encodec_24khz``) — what frechet_audio_distance's "encodec" FAD uses (its
    ``model.encoder(audio)``, no normalisation). Loaded from a transformers ``EncodecModel`` folder
    (the published checkpoints as converted on the Hugging Face hub); the 48 kHz model is stereo,
    mono clips are duplicated to both channels as frechet_audio_distance does."""

    name = "encodec"
    per_frame = True

    def __init__(self, model: str | None = None, device: str = "cpu") -> None:
        if not model or not Path(model).is_dir():
            raise FileNotFoundError(
                f"encodec model folder not found: {model} (model=DIR with a transformers EncodecModel, "
                "e.g. facebook/encodec_24khz)"
            )
        from transformers import EncodecModel

        self.model = EncodecModel.from_pretrained(model, local_files_only=True).to(device).eval()
        self.sample_rate = self.model.config.sampling_rate  # type: ignore[misc]
        self.channels = self.model.config.audio_channels  # type: ignore[misc]
        self.device = device
        self._identity = {"weights": weights_digest(Path(model))}

    def identity(self) -> dict[str, object]:
        return self._identity

    def frames_prepared(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        import torch

        out = []
        with torch.inference_mode():
            for c in clips:  # one by one: no padding enters a clip's frames
                x = torch.from_numpy(c.audio)[None].to(self.device)
                out.append(self.model.encoder(x)[0].T.float().cpu().numpy())
        return out


def peak_normalize(audio: np.ndarray, dbfs: float = -1.0) -> np.ndarray:
    """pyloudnorm's peak normalisation (stable-audio-metrics' first step), float64; silence is
    returned as it is instead of divided by zero."""
    import pyloudnorm

    audio = np.asarray(audio, dtype=np.float64)
    return pyloudnorm.normalize.peak(audio, dbfs) if np.any(audio) else audio


class OpenL3Embedder(Embedder):
    """OpenL3 frame embeddings as stable-audio-metrics computes its FD (``openl3_fd``).

    Each clip is peak-normalised to -1 dBFS, resampled to ``bandwidth`` Hz (the evaluation
    bandwidth, e.g. 44100) and then to OpenL3's 48 kHz (both with soxr); frames of 1 s every
    ``hop_s`` seconds, centred (half a frame of zeros before the start, the end zero-padded to a
    whole frame), as openl3's ``get_audio_embedding``. ``channels=2`` embeds left and right
    separately and concatenates them (1024-d; mono clips are duplicated), ``channels=1`` is mono
    (512-d). The network is torchopenl3's ``PytorchOpenl3`` port (mel256 / env or music / 512),
    loaded from ``checkpoint``; the TensorFlow original is not reachable here.
    """

    name = "openl3"
    per_frame = True

    def __init__(
        self,
        checkpoint: str | None = None,
        content_type: str = "env",
        hop_s: float = 0.5,
        channels: int = 1,
        bandwidth: int = 44_100,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        from ttaeval.optional import import_reference

        models = import_reference("torchopenl3.models", "openl3 embedder")
        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"openl3 checkpoint not found: {checkpoint} "
                f"(checkpoint=PATH to torchopenl3_mel256_{content_type}_512.pth.tar)"
            )
        if channels not in (1, 2):
            raise ValueError(f"openl3 channels must be 1 or 2, got {channels}")
        import torch

        model = models.PytorchOpenl3(input_repr="mel256", embedding_size=512, content_type=content_type)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"openl3: {checkpoint} does not fit: {str(exc).splitlines()[0]}") from None
        self.model = model.to(device).eval()
        self.sample_rate, self.channels = bandwidth, channels  # type: ignore[misc]
        self.hop_s, self.batch_size, self.device = hop_s, batch_size, device
        self._identity = {
            "weights": weights_digest(Path(checkpoint)),
            "content_type": content_type,
            "hop_s": hop_s,
            "channels": channels,
            "bandwidth": bandwidth,
        }

    def identity(self) -> dict[str, object]:
        return self._identity

    def frames(self, wave: np.ndarray) -> np.ndarray:
        """``(frames, 48000)`` 1 s frames of a 48 kHz waveform, centred, every ``hop_s`` seconds."""
        frame, hop = 48_000, int(self.hop_s * 48_000)
        x = np.concatenate([np.zeros(frame // 2, np.float32), wave.astype(np.float32)])
        count = 1 if len(x) <= frame else 1 + -(-(len(x) - frame) // hop)
        x = np.pad(x, (0, max(0, frame + (count - 1) * hop - len(x))))
        return np.stack([x[i * hop : i * hop + frame] for i in range(count)])

    def frames_prepared(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        import soxr
        import torch

        out = []
        for c in clips:
            audio = peak_normalize(c.audio)
            per_channel = []
            for ch in audio:
                wave = soxr.resample(ch, self.sample_rate, 48_000, quality="HQ").astype(np.float32)
                frames = torch.from_numpy(self.frames(wave))[:, None]
                with torch.inference_mode():
                    emb = [
                        self.model(frames[s : s + self.batch_size].to(self.device)).float().cpu().numpy()
                        for s in range(0, len(frames), self.batch_size)
                    ]
                per_channel.append(np.concatenate(emb))
            out.append(np.concatenate(per_channel, axis=1))
        return out


class PasstEmbedder(Embedder):
    """PaSST's 527 AudioSet logits per clip, as stable-audio-metrics computes them for its KL:
    peak-normalised to -1 dBFS, 32 kHz, 10 s windows every 5 s (``backbones.passt.sam_windows``),
    logits averaged over windows (``collect="max"``: maximum). Softmax them for posteriors
    (``setmetrics.kl_sam`` does)."""

    name = "passt"
    sample_rate = 32_000

    def __init__(
        self,
        checkpoint: str | None = None,
        arch: str = "passt_s_swa_p16_128_ap476",
        collect: str = "mean",
        device: str = "cpu",
    ) -> None:
        from ttaeval.backbones.passt import PasstMel, load_passt

        if not checkpoint or not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"passt checkpoint not found: {checkpoint} (checkpoint=PATH to the {arch} weights)"
            )
        if collect not in ("mean", "max"):
            raise ValueError(f"passt collect must be 'mean' or 'max', got {collect!r}")
        self.net = load_passt(checkpoint, arch, device)
        self.mel = PasstMel().to(device)
        self.collect, self.device = collect, device
        self._identity = {"weights": weights_digest(Path(checkpoint)), "arch": arch, "collect": collect}

    def identity(self) -> dict[str, object]:
        return self._identity

    def embed_prepared(self, clips: Sequence[Clip]) -> np.ndarray:
        import torch

        from ttaeval.backbones.passt import sam_windows

        out = []
        for c in clips:
            x = peak_normalize(c.audio[0]).astype(np.float32)
            logits = []
            with torch.inference_mode():
                for w in sam_windows(x):
                    spec = self.mel(torch.from_numpy(w)[None].to(self.device))
                    logits.append(self.net(spec[:, None])[0][0].float().cpu().numpy())
            stack = np.stack(logits)
            out.append(stack.mean(0) if self.collect == "mean" else stack.max(0))
        return np.stack(out)

    def logits(self, clips: Sequence[Clip]) -> np.ndarray:
        """``(n, 527)`` window-collected logits."""
        return self.embed(clips)


class ClapEmbedder(Embedder):
    """The audio embedding of any CLAP scorer backend, e.g. ``ClapEmbedder("clap:laion,checkpoint=...")``."""

    name = "clap"

    def __init__(self, spec: str = "clap:mini") -> None:
        from ttaeval.scorers import get_scorer

        self.scorer = get_scorer(spec)
        if not hasattr(self.scorer, "embed_audio"):
            raise ValueError(f"clap embedder needs a CLAP scorer, got {spec!r}")
        self.sample_rate = self.scorer.sample_rate  # type: ignore[misc]

    def identity(self) -> dict[str, object]:
        return {"scorer": self.scorer.id}

    def embed_prepared(self, clips: Sequence[Clip]) -> np.ndarray:
        return self.scorer.embed_audio([c.audio[0] for c in clips])


EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")
EMBEDDERS.register("mini", "ttaeval.synth.clap_mini:MiniEmbedder", requires=("torch",))
EMBEDDERS.register("panns", PannsEmbedder, extra="fad", requires=("torchlibrosa",))
EMBEDDERS.register("vggish", VGGishEmbedder, requires=("torch",))
EMBEDDERS.register("clap", ClapEmbedder, requires=("torch",))
EMBEDDERS.register("encodec", EncodecEmbedder, requires=("transformers",))
EMBEDDERS.register("openl3", OpenL3Embedder, extra="fad", requires=("torchopenl3",))
EMBEDDERS.register("passt", PasstEmbedder, extra="fad", requires=("hear21passt",))


def get_embedder(name: str, **options: object) -> Embedder:
    return EMBEDDERS.get(name)(**options)


def reference_stats(
    embedder: Embedder, clips: Sequence[Clip], cache_dir: str | Path | None = None
) -> GaussianStats:
    """Float64 statistics of a reference set's FAD samples, cached on disk by content.

    The cache key is the embedder's id and the clips' content keys (order-free), never a path: a
    changed file or other weights make a new entry. Entries are ``.npz`` files of the sums.
    """
    key = hashlib.sha256("\n".join([embedder.id, *sorted(c.key for c in clips)]).encode()).hexdigest()
    path = Path(cache_dir) / f"{embedder.name}-{key[:32]}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path) as z:
            return GaussianStats(int(z["dim"]), int(z["count"]), z["total"], z["outer"])
    stats = GaussianStats.from_embeddings(embedder.fad_samples(clips))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, dim=stats.dim, count=stats.count, total=stats.total, outer=stats.outer)
        tmp.replace(path)
    return stats


def frechet_audio_distance(embedder: Embedder, clips: Sequence[Clip], reference: Sequence[Clip]) -> float:
    """FAD between two clip sets under one embedder (float64 statistics; frames for VGGish)."""
    return fad(embedder.fad_samples(clips), reference_stats(embedder, reference))
