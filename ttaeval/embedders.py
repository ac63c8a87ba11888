"""Audio embedders for set metrics (FAD and its family): clips in, ``(n, dim)`` float32 out.

One small class per embedding model (like fadtk's model loaders), registered lazily by name:
``mini`` (clap-mini), ``panns`` (Cnn14, 2048-d, with 527 class logits for KL/IS), ``vggish``
(128-d per 0.96 s example: FAD statistics over examples, as the FAD paper), ``encodec`` (encoder
frames before quantisation), ``clap`` (any CLAP scorer backend's audio embedding). Every embedder
is deterministic.
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
