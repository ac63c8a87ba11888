"""Files that are not plain, readable audio files: named pipes, symlinks that lead nowhere, folders,
files without read permission, WAVs cut short. Each is an error or a warning naming the file and
the cause — never a hang, never libsndfile's bare "System error."."""

from __future__ import annotations

import io
import os
import select
import signal
import tempfile
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from helpers import tone
from ttaeval.cli import app
from ttaeval.io.audio import AudioError, TruncatedAudioWarning, load_audio, try_load_audio

HANG_LIMIT = 10.0  # seconds; a load that takes longer is taken to hang

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


def _release(fifo: Path) -> None:
    """Unblock a reader stuck opening ``fifo`` (opening its other end), so a hang fails the test
    instead of leaving a thread behind."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO when nobody has it open for reading
    except OSError:
        return
    os.close(fd)


def _within_limit(fifo: Path, call):
    """``call()`` in a thread, failing the test (after releasing the pipe) if it does not end in time."""
    got: list = []
    thread = threading.Thread(target=lambda: got.append(call()), daemon=True)
    thread.start()
    thread.join(HANG_LIMIT)
    if thread.is_alive():
        for _ in range(20):
            _release(fifo)
            thread.join(0.5)
            if not thread.is_alive():
                break
        pytest.fail(f"reading {fifo.name} hung for more than {HANG_LIMIT:.0f} s (it waits for a writer)")
    return got[0]


@needs_fifo
def test_a_named_pipe_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    got = _within_limit(fifo, lambda: try_load_audio(fifo))
    assert got == f"{fifo}: unreadable: not a regular file (named pipe)"


@needs_fifo
def test_score_lists_a_folder_holding_a_named_pipe_and_scores_the_rest(tmp_path):
    folder = tmp_path / "sys"
    folder.mkdir()
    sf.write(folder / "good.wav", tone(300, 1.0).T, 16_000)
    fifo = folder / "x.wav"
    os.mkfifo(fifo)
    run = tmp_path / "run"
    args = ["score", str(folder), "--scorer", "signal", "--out", str(run)]
    result = _within_limit(fifo, lambda: CliRunner().invoke(app, args))
    assert result.exit_code == 1, result.output  # one file could not be scored
    table = pd.read_csv(io.StringIO(CliRunner().invoke(app, ["export", str(run), "--format", "csv"]).stdout))
    rows = {r["prompt_id"]: r for r in table.to_dict("records")}
    assert set(rows) == {"good", "x"}
    assert "not a regular file (named pipe)" in rows["x"]["error"]
    assert rows["good"]["signal/duration_s"] == 1.0


def test_a_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "x.wav"
    link.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioError) as info:
        load_audio(link)
    assert str(info.value) == f"{link}: unreadable: dangling symlink → {tmp_path / 'gone.wav'}"


def test_a_symlink_loop_is_named(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    assert try_load_audio(a) == f"{a}: unreadable: symlink loop"
    self_loop = tmp_path / "x.wav"
    self_loop.symlink_to(self_loop)
    assert try_load_audio(self_loop) == f"{self_loop}: unreadable: symlink loop"


def test_a_folder_named_like_audio_is_named_a_directory(tmp_path):
    folder = tmp_path / "x.wav"
    folder.mkdir()
    assert try_load_audio(folder) == f"{folder}: unreadable: is a directory"
    link = tmp_path / "to_folder.wav"
    link.symlink_to(folder)  # followed: what counts is what the link leads to
    assert try_load_audio(link) == f"{link}: unreadable: is a directory"


def test_a_missing_file_is_named_missing(tmp_path):
    path = tmp_path / "x.wav"
    assert try_load_audio(path) == f"{path}: unreadable: no such file"


def test_a_symlink_to_a_good_file_loads(tmp_path):
    real = tmp_path / "real.wav"
    sf.write(real, tone(300, 1.0).T, 16_000)
    link = tmp_path / "x.wav"
    link.symlink_to(real)
    assert load_audio(link).num_samples == 16_000


def _load_without_privileges(path: Path) -> str:
    """``try_load_audio(path)`` in a forked child that has dropped to the user ``nobody`` (root reads
    mode-000 files; nobody does not), so the open fails with the real EACCES."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            except OSError:
                code = 3  # this root may not change user (a restricted container)
                raise
            got = try_load_audio(path)
            os.write(write, (got if isinstance(got, str) else "loaded").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    ready, out = [], b""
    try:
        ready, _, _ = select.select([read], [], [], HANG_LIMIT)
        if ready:
            while chunk := os.read(read, 4096):
                out += chunk
    finally:
        os.close(read)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert ready, "the unprivileged load hung"
    if os.waitstatus_to_exitcode(status) == 3:
        pytest.skip("cannot drop root privileges here: no way to make a read fail for permissions")
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return out.decode()


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_file_without_read_permission_says_permission_denied():
    # A folder anyone may enter (pytest's tmp_path is private to its user), holding a mode-000 file.
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "x.wav"
        sf.write(path, tone(300, 1.0).T, 16_000)
        path.chmod(0)
        got = _load_without_privileges(path) if os.geteuid() == 0 else try_load_audio(path)
        assert got == f"{path}: unreadable: permission denied"


def test_other_os_errors_are_named_by_their_strerror(tmp_path):
    file = tmp_path / "file.wav"
    file.write_bytes(b"")
    inside = file / "x.wav"  # a file used as a folder: ENOTDIR
    assert try_load_audio(inside) == f"{inside}: unreadable: not a directory"


def _truncated_wav(path: Path, keep: float, subtype: str = "PCM_16", channels: int = 1) -> None:
    """A 1 s 16 kHz WAV whose data chunk is cut to ``keep`` of its length; the header still says 1 s."""
    sf.write(path, tone(300, 1.0, channels=channels).T, 16_000, subtype=subtype)
    data = path.read_bytes()
    head = data.index(b"data") + 8
    path.write_bytes(data[: head + int(keep * (len(data) - head))])


def test_a_truncated_wav_warns_naming_the_file_and_both_lengths(tmp_path):
    path = tmp_path / "x.wav"
    _truncated_wav(path, 0.5)
    with pytest.warns(TruncatedAudioWarning) as record:
        clip = load_audio(path)
    assert clip.num_samples == 8_000  # scored as what the file holds
    message = f"{path}: truncated: header says 16000 frames, file holds 8000"
    assert [str(w.message) for w in record] == [message]
    assert "truncated: header says 16000 frames, file holds 8000" in clip.warnings  # on the clip's row
    with pytest.warns(TruncatedAudioWarning):
        assert isinstance(try_load_audio(path), type(clip))


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_24", 2), ("FLOAT", 1), ("PCM_U8", 3)])
def test_truncation_is_counted_in_frames_of_any_pcm_layout(tmp_path, subtype, channels):
    path = tmp_path / "x.wav"
    _truncated_wav(path, 0.25, subtype, channels)
    with pytest.warns(TruncatedAudioWarning, match="header says 16000 frames, file holds 4000$"):
        load_audio(path)


def test_whole_and_streamed_wavs_do_not_warn(tmp_path):
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(300, 1.0).T, 16_000)
    streamed = tmp_path / "streamed.wav"  # a writer that could not seek back: data size 0xFFFFFFFF
    data = bytearray(whole.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    streamed.write_bytes(bytes(data))
    flac = tmp_path / "flac.wav"  # FLAC content named .wav: no RIFF header to read
    sf.write(flac, tone(300, 1.0).T, 16_000, format="FLAC")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in (whole, streamed, flac):
            clip = load_audio(path)
            assert clip.num_samples == 16_000
            assert not any("truncated" in w for w in clip.warnings)


def test_a_wav_with_chunks_before_its_data_is_measured_from_its_data_chunk(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, tone(300, 1.0).T, 16_000)
    data = path.read_bytes()
    at = data.index(b"data")
    junk = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\0"  # odd size: a pad byte follows
    path.write_bytes(data[:at] + junk + data[at : at + 8 + 16_000 * 2 // 2])
    with pytest.warns(TruncatedAudioWarning, match="header says 16000 frames, file holds 8000$"):
        assert load_audio(path).num_samples == 8_000
