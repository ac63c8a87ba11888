"""Audio I/O: formats, resampling, channel rules, content keys, validation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import dominant_frequency, tone
from ttaeval.io.audio import (
    AudioError,
    Clip,
    ValidationConfig,
    check_audio,
    content_key,
    load_audio,
    resample,
    save_audio,
    to_channels,
)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_every_supported_format_loads_as_float32_channels_first(tmp_path, suffix):
    x = tone(440, 1.0, 16_000, channels=2)
    path = tmp_path / f"a{suffix}"
    sf.write(path, x.T, 16_000)
    clip = load_audio(path)
    assert clip.audio.dtype == np.float32
    assert clip.channels == 2
    assert clip.sample_rate == 16_000
    assert abs(clip.duration - 1.0) < 0.1  # lossy codecs pad a little
    assert abs(dominant_frequency(clip.audio[0], 16_000) - 440) < 5


def test_lossless_roundtrip_is_exact_to_16_bit_precision(tmp_path):
    x = tone(300, 0.5, 22_050)
    save_audio(tmp_path / "x.wav", Clip(x, 22_050))
    y = load_audio(tmp_path / "x.wav").audio
    assert y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1 / 2**15


def test_resample_keeps_pitch_and_length():
    x = tone(1000, 1.0, 44_100)
    y = resample(x, 44_100, 16_000)
    assert y.shape == (1, 16_000)
    assert y.dtype == np.float32
    assert abs(dominant_frequency(y[0], 16_000) - 1000) < 2
    assert resample(x, 44_100, 44_100) is x


def test_load_resamples_and_downmixes_on_request(tmp_path):
    sf.write(tmp_path / "s.wav", tone(500, 1.0, 48_000, channels=2).T, 48_000)
    clip = load_audio(tmp_path / "s.wav", sample_rate=16_000, channels=1)
    assert (clip.channels, clip.sample_rate, clip.num_samples) == (1, 16_000, 16_000)


def test_channel_rules():
    stereo = np.stack([np.ones(4), -np.ones(4) * 0.5]).astype(np.float32)
    np.testing.assert_allclose(to_channels(stereo, 1), [[0.25] * 4])
    assert to_channels(stereo[:1], 3).shape == (3, 4)
    six = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.testing.assert_array_equal(to_channels(six, 2), six[:2])
    np.testing.assert_array_equal(to_channels(stereo, 3)[2], stereo[1])


def test_content_key_depends_on_pcm_and_rate_not_on_path(tmp_path):
    x = tone()
    sf.write(tmp_path / "a.wav", x.T, 16_000, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", x.T, 16_000, subtype="FLOAT")
    a, b = load_audio(tmp_path / "a.wav"), load_audio(tmp_path / "b.wav")
    assert a.key == b.key == content_key(x, 16_000)
    assert content_key(x, 22_050) != a.key
    y = x.copy()
    y[0, 100] += 1e-4
    assert content_key(y, 16_000) != a.key


@pytest.mark.parametrize(
    "audio, expected",
    [
        (np.full((1, 16_000), 1.0, np.float32), "clipped"),
        (np.zeros((1, 16_000), np.float32), "silent"),
        (tone(amp=0.2) + 0.3, "dc offset"),
    ],
)
def test_validation_warns_about_bad_but_scorable_audio(audio, expected):
    assert any(w.startswith(expected) for w in check_audio(audio))


def test_clean_audio_has_no_warnings():
    assert check_audio(tone()) == ()


@pytest.mark.parametrize(
    "audio, cause",
    [
        (np.zeros((1, 0), np.float32), "empty"),
        (np.array([[0.1, np.nan, 0.2]], np.float32), "non-finite"),
        (np.array([[0.1, np.inf, 0.2]], np.float32), "non-finite"),
    ],
)
def test_validation_refuses_unscorable_audio(audio, cause):
    with pytest.raises(AudioError, match=cause):
        check_audio(audio)


def test_errors_name_the_file_and_the_cause(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    sf.write(corrupt, tone().T, 16_000)
    corrupt.write_bytes(corrupt.read_bytes()[:20])
    with pytest.raises(AudioError, match=r"corrupt\.wav: unreadable"):
        load_audio(corrupt)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(AudioError, match=r"notes\.wav: unreadable"):
        load_audio(text)
    nan = tmp_path / "nan.wav"
    bad = tone()
    bad[0, 5] = np.nan
    sf.write(nan, bad.T, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: non-finite samples: 1 NaN/Inf"):
        load_audio(nan)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 16_000)
    with pytest.raises(AudioError, match=r"empty\.wav: empty"):
        load_audio(empty)


def test_over_long_files_are_refused_from_the_header(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros((8_000 * 30, 1), np.float32), 8_000)
    with pytest.raises(AudioError, match=r"too long: 30.0 s > max_duration 10 s"):
        load_audio(path, validation=ValidationConfig(max_duration=10))
    assert load_audio(path).duration == 30.0


def test_clip_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="channels, samples"):
        Clip(np.zeros(10, np.float32), 16_000)


@settings(max_examples=40, deadline=None)
@given(
    channels=st.integers(1, 4),
    samples=st.integers(1, 4000),
    rate=st.sampled_from([8_000, 16_000, 44_100, 48_000]),
    subtype=st.sampled_from(["PCM_16", "PCM_24", "FLOAT"]),
    seed=st.integers(0, 2**31),
)
def test_any_valid_wav_loads_with_its_shape_and_rate(
    tmp_path_factory, channels, samples, rate, subtype, seed
):
    x = np.random.default_rng(seed).uniform(-0.9, 0.9, (channels, samples)).astype(np.float32)
    path = tmp_path_factory.mktemp("h") / "x.wav"
    sf.write(path, x.T, rate, subtype=subtype)
    clip = load_audio(path)
    assert clip.audio.shape == (channels, samples)
    assert clip.sample_rate == rate
    assert np.max(np.abs(clip.audio - x)) < 1e-4


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=200))
def test_arbitrary_bytes_raise_audio_error_not_crash(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("b") / "junk.wav"
    path.write_bytes(data)
    try:
        clip = load_audio(path)
    except AudioError as exc:
        assert "junk.wav" in str(exc)
    else:
        assert clip.audio.size > 0 and np.isfinite(clip.audio).all()
