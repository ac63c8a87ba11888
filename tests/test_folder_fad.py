"""``ttaeval fad GENERATED REFERENCE``: FAD between two folders through the scorer and store path,
bad files named."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from helpers import tone
from ttaeval.cli import app
from ttaeval.embedders import frechet_audio_distance, get_embedder
from ttaeval.folder_fad import embedding_scorer, folder_fad
from ttaeval.io.audio import load_audio


def _folder(path, freqs, rate=22_050):
    path.mkdir()
    rng = np.random.default_rng(len(freqs))
    for i, f in enumerate(freqs):
        x = tone(f, 1.5, rate=rate)[0] + 0.05 * rng.standard_normal(int(1.5 * rate)).astype(np.float32)
        sf.write(path / f"clip_{i:02d}.wav", x, rate)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fad")
    gen = _folder(root / "gen", [200 + 37 * i for i in range(11)])
    ref = _folder(root / "ref", [300 + 53 * i for i in range(9)], rate=16_000)
    return gen, ref


def test_folder_fad_equals_fad_of_the_loaded_clips_whatever_the_batch(folders, tmp_path):
    gen, ref = folders
    embedder = get_embedder("mini")
    clips = [[load_audio(p) for p in sorted(folder.glob("*.wav"))] for folder in (gen, ref)]
    expected = frechet_audio_distance(embedder, *clips)  # every clip in memory at once
    for batch in (3, 64):
        got = folder_fad(gen, ref, embedder, batch_size=batch, workers=2)
        assert got.fad == pytest.approx(expected, rel=1e-6)
        assert (got.generated_files, got.reference_files) == (11, 9)
        assert not got.errors
    assert folder_fad(gen, gen, embedder).fad == pytest.approx(0.0, abs=1e-6)
    kept = folder_fad(gen, ref, embedder, store_dir=tmp_path / "kept")  # embeddings kept in a run store
    again = folder_fad(gen, ref, embedder, store_dir=tmp_path / "kept")  # read back, not re-embedded
    assert kept.fad == again.fad == pytest.approx(expected, rel=1e-6)
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for p in sorted(gen.glob("*.wav"))[:6]:
        (fewer / p.name).write_bytes(p.read_bytes())
    subset = folder_fad(fewer, ref, embedder, store_dir=tmp_path / "kept2")
    shrunk = folder_fad(fewer, ref, embedder, store_dir=tmp_path / "kept")  # gen's 11 rows replaced by 6
    assert shrunk.generated_files == 6 and shrunk.fad == pytest.approx(subset.fad, rel=1e-9)


def test_cli_prints_the_fad_and_names_the_files_it_left_out(folders, tmp_path):
    gen, ref = folders
    runner = CliRunner(env={"COLUMNS": "400"})  # no wrapped lines
    clean = runner.invoke(app, ["fad", str(gen), str(ref)])
    assert clean.exit_code == 0, clean.output
    value = float(clean.stdout.strip().splitlines()[-1])
    assert value > 0
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in gen.glob("*.wav"):
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "zz_corrupt.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")
    out = runner.invoke(app, ["fad", str(broken), "--reference", str(ref), "--embedder", "mini,batch_size=4"])
    assert out.exit_code == 1
    assert "zz_corrupt.wav: unreadable: Error in WAV file" in out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(value, rel=1e-5)  # the good files only


def test_bad_folders_and_specs_are_one_clear_line(folders, tmp_path):
    gen, _ = folders
    runner = CliRunner(env={"COLUMNS": "400"})  # no wrapped lines
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.invoke(app, ["fad", str(gen), str(empty)])
    assert out.exit_code == 2 and "nothing to embed (no audio files)" in out.stderr
    out = runner.invoke(app, ["fad", str(gen), str(tmp_path / "missing")])
    assert out.exit_code == 2 and "audio folder not found" in out.stderr
    with pytest.raises(ValueError, match="has no option 'size'; options: batch_size, checkpoint"):
        embedding_scorer("mini,size=3")
    with pytest.raises(FileNotFoundError, match="vggish checkpoint not found"):
        embedding_scorer(f"vggish,checkpoint={tmp_path / 'none.pth'}")
    with pytest.raises(ValueError, match="not an embedding scorer"):
        embedding_scorer("signal:builtin")
    both = runner.invoke(app, ["fad", str(gen), str(gen), "--reference", str(gen)])
    assert both.exit_code == 2 and "give the reference folder once" in both.stderr
