"""Audio in and out: the Clip type, loading, resampling, downmixing and validation.

A Clip is float32 ``(channels, samples)`` in [-1, 1] with its sample rate. Its content key — a hash of
the PCM and the rate — is what every cache is keyed on, never a file path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import signal
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    from ttaeval.io.prompts import Prompt

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
UNSUPPORTED_AUDIO_EXTENSIONS = (".m4a", ".aac", ".mp4", ".wma", ".webm", ".amr", ".ape")
"""Audio formats libsndfile cannot decode: a file of these is reported, never silently skipped."""


class AudioError(ValueError):
    """A clip that cannot be scored: unreadable, empty, or holding NaN/Inf samples."""


class TruncatedAudioWarning(UserWarning):
    """A WAV file holds fewer frames than its header says (cut short by a crash or a full disk): it is
    loaded as what it holds, and the finding is also on the Clip's ``warnings``."""


@dataclass(frozen=True, eq=False)
class Clip:
    """One piece of audio and what it answers.

    Attributes:
        audio: float32 array ``(channels, samples)``.
        sample_rate: samples per second.
        prompt: the prompt this clip answers, or None for reference audio.
        source: where it came from (a path, a generator), for messages only — never a cache key.
        warnings: validation findings that do not stop scoring (clipped, silent, DC offset).
    """

    audio: np.ndarray
    sample_rate: int
    prompt: Prompt | None = None
    source: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.audio.ndim != 2:
            raise ValueError(f"Clip audio must be (channels, samples), got shape {self.audio.shape}")
        if self.audio.dtype != np.float32:
            object.__setattr__(self, "audio", self.audio.astype(np.float32))
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @cached_property
    def key(self) -> str:
        """Content key: blake2b of the rate, the shape and the float32 PCM."""
        return content_key(self.audio, self.sample_rate)

    @property
    def channels(self) -> int:
        return self.audio.shape[0]

    @property
    def num_samples(self) -> int:
        return self.audio.shape[1]

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def with_audio(self, audio: np.ndarray, sample_rate: int) -> Clip:
        """The same clip (prompt, source, warnings) with other audio, e.g. resampled."""
        return Clip(audio, sample_rate, self.prompt, self.source, self.warnings)


def content_key(audio: np.ndarray, sample_rate: int) -> str:
    """Hash of PCM + rate: equal audio gives equal keys wherever it came from."""
    pcm = np.ascontiguousarray(audio, dtype=np.float32)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{sample_rate}:{pcm.shape[0]}x{pcm.shape[1]}:".encode())
    h.update(pcm.tobytes())
    return h.hexdigest()


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(channels, samples)`` with soxr at high quality; a no-op at equal rates."""
    if orig_rate == target_rate:
        return audio
    out = soxr.resample(audio.T, orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32).reshape(audio.shape[0], -1)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Downmix or upmix ``(channels, samples)``.

    Rules: to mono, average all channels (equal weight, no -3 dB pan law); mono to N channels,
    repeat; N to M otherwise, keep the first M (when M < N) or repeat the last (when M > N).
    """
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    if have == 1:
        return np.repeat(audio, channels, axis=0)
    if channels < have:
        return audio[:channels]
    return np.concatenate([audio, np.repeat(audio[-1:], channels - have, axis=0)], axis=0)


def prepare(clip: Clip, sample_rate: int | None, channels: int | None) -> Clip:
    """The clip as a scorer wants it: resampled once (soxr HQ) and down/upmixed."""
    audio = clip.audio
    if channels is not None:
        audio = to_channels(audio, channels)
    rate = clip.sample_rate
    if sample_rate is not None and sample_rate != rate:
        audio, rate = resample(audio, rate, sample_rate), sample_rate
    return clip if audio is clip.audio else clip.with_audio(audio, rate)


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the per-clip checks.

    Attributes:
        max_duration: clips longer than this (seconds) are refused before decoding (default 600).
        clip_threshold: |sample| at or above this counts as clipped.
        clipped_fraction: warn when more than this fraction of samples is clipped.
        silence_dbfs: warn "silent" when the whole clip's RMS is below this (dBFS).
        dc_threshold: warn when any channel's mean exceeds this in absolute value.
    """

    max_duration: float = 600.0
    clip_threshold: float = 0.999
    clipped_fraction: float = 0.001
    silence_dbfs: float = -60.0
    dc_threshold: float = 0.05


def check_audio(audio: np.ndarray, config: ValidationConfig = ValidationConfig()) -> tuple[str, ...]:
    """Validate decoded audio. Raises AudioError for what cannot be scored; returns warnings.

    Errors: empty, NaN/Inf samples. Warnings: clipped, silent, DC offset — these are properties of
    a (bad) generation that scorers should still see and measure.
    """
    if audio.size == 0:
        raise AudioError("empty: the file holds no samples")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = int(audio.size - np.count_nonzero(finite))
        raise AudioError(f"non-finite samples: {bad} NaN/Inf values")
    warnings = []
    frac = float(np.mean(np.abs(audio) >= config.clip_threshold))
    if frac > config.clipped_fraction:
        warnings.append(f"clipped: {100 * frac:.2f}% of samples at full scale")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms == 0 or 20 * np.log10(rms) < config.silence_dbfs:
        warnings.append(f"silent: RMS below {config.silence_dbfs:.0f} dBFS")
    dc = float(np.max(np.abs(audio.mean(axis=1, dtype=np.float64))))
    if dc > config.dc_threshold:
        warnings.append(f"dc offset: channel mean {dc:.3f}")
    return tuple(warnings)


def load_audio(
    path: str | Path,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    prompt: Prompt | None = None,
    validation: ValidationConfig = ValidationConfig(),
) -> Clip:
    """Read a wav/flac/ogg/mp3 file into a validated Clip.

    Args:
        path: the file.
        sample_rate: resample to this rate (soxr HQ); None keeps the file's rate.
        channels: down/upmix to this many channels (see ``to_channels``); None keeps them.
        prompt: the prompt the clip answers, attached to the Clip.
        validation: thresholds; the file's length is checked from its header before decoding.

    Raises:
        AudioError: naming the file and the cause: unreadable (no such file, dangling symlink,
            symlink loop, permission denied, a directory, not a regular file such as a named pipe,
            which is never opened), corrupt, empty, NaN/Inf, too long.

    Warns:
        TruncatedAudioWarning: a WAV holds fewer frames than its header says; the clip is what it
            holds, and carries the finding in its ``warnings`` ("truncated: header says ...").
    """
    path = Path(path)
    if path.suffix.lower() in UNSUPPORTED_AUDIO_EXTENSIONS:
        readable = ", ".join(AUDIO_EXTENSIONS)
        raise AudioError(
            f"{path}: unsupported format {path.suffix!r} (readable: {readable}); convert it to wav"
        )
    declared = _probe(path)
    try:
        info = sf.info(os.fsencode(path))  # bytes: a name UTF-8 cannot encode still opens
    except Exception as exc:  # soundfile raises several types for the same cause
        raise AudioError(f"{path}: unreadable: {_reason(exc)}") from exc
    if info.frames > 0 and info.frames / info.samplerate > validation.max_duration:
        raise AudioError(
            f"{path}: too long: {info.frames / info.samplerate:.1f} s > max_duration "
            f"{validation.max_duration:.0f} s"
        )
    try:
        data, rate = sf.read(os.fsencode(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: corrupt: {_reason(exc)}") from exc
    audio = np.ascontiguousarray(data.T)
    try:
        found = check_audio(audio, validation)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    if declared is not None and declared > audio.shape[1]:
        cut = f"truncated: header says {declared} frames, file holds {audio.shape[1]}"
        warnings.warn(f"{path}: {cut}", TruncatedAudioWarning, stacklevel=2)
        found = (cut, *found)
    clip = Clip(audio, int(rate), prompt=prompt, source=str(path), warnings=found)
    return prepare(clip, sample_rate, channels)


def try_load_audio(path: str | Path, **options: Any) -> Clip | str:
    """``load_audio(path, **options)``, or the reason the file cannot be had, naming it: for readers
    of many files that keep the good ones and report the rest."""
    try:
        return load_audio(path, **options)
    except AudioError as exc:
        return str(exc)
    except OSError as exc:  # an I/O error past the checks of ``_probe``
        return f"{path}: unreadable: {_os_reason(Path(path), exc)}"


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it. For soundfile's in-memory I/O: its
    Python callbacks run inside libsndfile, where a KeyboardInterrupt is swallowed ("Exception ignored
    from cffi callback") and the short write then fails soundfile's own assertion, an internal error
    instead of an interrupt."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # no handler runs here, or one set outside Python that could not be put back
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def float_wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """``audio`` (``(samples,)`` or ``(samples, channels)``) as a WAV file of 32-bit float samples, in
    memory (lossless for float32); a Ctrl-C meanwhile is delivered once it is written."""
    buffer = io.BytesIO()
    with interrupts_held():
        sf.write(buffer, np.asarray(audio, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def save_audio(path: str | Path, clip: Clip, subtype: str | None = None) -> Path:
    """Write a clip as wav/flac/ogg (format by suffix, soundfile's default subtype: 16-bit PCM for wav)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), clip.audio.T, clip.sample_rate, subtype=subtype)
    return path


_FILE_KINDS = {
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}
_PCM_WAV_TAGS = (1, 3, 6, 7, 0xFFFE)
"""WAV format tags whose block align is one frame: PCM, float, A-law, mu-law, extensible."""


def _probe(path: Path) -> int | None:
    """Check that ``path`` is a regular file we may read, before libsndfile opens it (which blocks
    forever on a named pipe, and says "System error." for whatever else goes wrong); return the
    frames a PCM WAV's header declares (see ``_wav_declared_frames``).

    Raises:
        AudioError: naming the cause: no such file, dangling symlink, symlink loop, permission
            denied, is a directory, not a regular file (named pipe, socket, device).
    """
    try:
        mode = os.stat(path).st_mode  # follows symlinks: what counts is what a link leads to
        if stat.S_ISDIR(mode):
            raise AudioError(f"{path}: unreadable: is a directory")
        if not stat.S_ISREG(mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(mode), "special file")
            raise AudioError(f"{path}: unreadable: not a regular file ({kind})")
        # non-blocking, should the file become a pipe since the stat; permissions are checked here
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            return _wav_declared_frames(f)
    except OSError as exc:
        raise AudioError(f"{path}: unreadable: {_os_reason(path, exc)}") from exc


def _wav_declared_frames(f: Any) -> int | None:
    """Frames the data chunk of a RIFF WAV of PCM/float samples declares, from its header: libsndfile
    counts only the frames present, so this is how a truncated file is seen. None for other files
    and for streamed WAVs, whose writer could not go back to fill in the size (0 or 0xFFFFFFFF)."""
    riff = f.read(12)
    if riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
        return None
    frame = 0
    for _ in range(1000):  # a few chunks in any real file; bounded on a crafted one
        head = f.read(8)
        if len(head) < 8:
            return None
        chunk, size = struct.unpack("<4sI", head)
        if chunk == b"fmt ":
            fmt = f.read(14)
            if len(fmt) < 14 or size < 14:
                return None
            tag, _, _, _, frame = struct.unpack("<HHIIH", fmt)
            if tag not in _PCM_WAV_TAGS:
                return None
            size -= 14
        elif chunk == b"data":
            return size // frame if frame and size not in (0, 0xFFFFFFFF) else None
        f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    return None


def _os_reason(path: Path, exc: OSError) -> str:
    """An OSError's cause in words, naming a dangling symlink's target."""
    if exc.errno == errno.ENOENT:
        return f"dangling symlink → {os.readlink(path)}" if os.path.islink(path) else "no such file"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _reason(exc: Exception) -> str:
    """The library's message without its own "Error opening '<path>': " prefix (we name the file)."""
    text = str(exc).strip() or type(exc).__name__
    text = re.sub(r"^Error opening .*?: ", "", text.splitlines()[0])
    return text
