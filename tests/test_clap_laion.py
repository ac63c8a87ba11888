"""clap:laion on tiny random-initialised LAION-CLAP models built with laion_clap's own classes.

The real path from the checkpoint file on is exercised: ``CLAP_Module`` construction,
``load_state_dict`` (which drops ``position_ids``), ``get_audio_features``, the HTSAT audio tower
and the RoBERTa text tower. What the test cannot reach here:

- laion_clap's ``get_mel`` (fusion checkpoints), which needs torchaudio: the reference's mel is
  computed by librosa from the same documented definition (``reference_embedding``), the scorer's
  by our ``laion_mel``;
- ``RobertaModel.from_pretrained('roberta-base')`` inside ``CLAP_Module``: a RoBERTa built from a
  tiny local config stands in (as our loader builds one from a config for every checkpoint);
- the package's module-level ``roberta-base`` tokenizer (empty offline): a BPE tokenizer trained
  in-process is given to both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from helpers import (
    assert_all_scored,
    bpe_tokenizer,
    odd_but_valid_clips,
    reference_package,
    score_as_the_runner_does,
)
from ttaeval import Clip, Prompt, get_scorer

PROMPTS = [
    Prompt("a", "a dog barks loudly"),
    Prompt("b", "rain falls on a roof"),
    Prompt("c", "an engine idles"),
]


def tiny_roberta_config():
    from transformers import RobertaConfig

    # hidden size 768 is fixed by laion_clap's text projection; everything else is tiny.
    return RobertaConfig(
        vocab_size=200,
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        max_position_embeddings=80,
        type_vocab_size=1,
        pad_token_id=1,
    )


def package_module(fusion: bool):
    """A CLAP_Module built by the package, its text tower from the tiny config."""
    laion_clap = reference_package("laion_clap")
    from laion_clap.clap_module import model as laion_model
    from transformers import RobertaModel

    config = tiny_roberta_config()
    with mock.patch.object(laion_model.RobertaModel, "from_pretrained", lambda *a, **k: RobertaModel(config)):
        return laion_clap.CLAP_Module(enable_fusion=fusion, amodel="HTSAT-tiny", device="cpu")


def save_like_laion(module, path) -> None:
    """The released checkpoints: {"state_dict": {"module." + name: tensor}}, saved by an older
    transformers that still kept ``text_branch.embeddings.position_ids``."""
    state = {"module." + k: v for k, v in module.model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(80).expand(1, -1)
    torch.save({"state_dict": state, "epoch": 45}, path)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "fusion"])
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("laion")
    torch.manual_seed(0)
    save_like_laion(package_module(request.param), folder / "clap.pt")
    text = folder / "roberta"
    tok = bpe_tokenizer()
    tok.save_pretrained(text)
    tiny_roberta_config().save_pretrained(text)
    # the reference: a fresh module loaded through the package's own load_ckpt
    reference = package_module(request.param)
    reference.load_ckpt(str(folder / "clap.pt"), verbose=False)
    reference.tokenize = tok
    scorer = get_scorer(f"clap:laion,checkpoint={folder / 'clap.pt'},text_model={text}")
    return folder / "clap.pt", text, reference, scorer


def reference_embedding(reference, x: np.ndarray) -> np.ndarray:
    """The package's audio embedding of one clip of at most 10 s, as a plain laion_clap call."""
    from laion_clap.training import data

    if not reference.enable_fusion or data.torchaudio is not None:
        return reference.get_audio_embedding_from_data(x[None])[0]
    import librosa

    cfg = reference.model_cfg["audio_cfg"]
    wave = torch.from_numpy(data.int16_to_float32(data.float32_to_int16(x)))
    sample = data.get_audio_features({}, wave, 480_000, "rand_trunc", "repeatpad", cfg)
    power = librosa.feature.melspectrogram(
        y=sample["waveform"].numpy(),
        sr=48_000,
        n_fft=1024,
        hop_length=480,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=64,
        fmin=50,
        fmax=14_000,
        htk=True,
        norm=None,
    )
    mel = torch.from_numpy(10 * np.log10(np.maximum(power, 1e-10)).T).float()
    sample["mel_fusion"] = torch.stack([mel] * 4)
    reference.model.eval()  # as get_audio_embedding_from_data does
    with torch.no_grad():
        return reference.model.get_audio_embedding([sample])[0].numpy()


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(48_000 * seconds))).astype(np.float32)


def test_score_equals_the_package_api(tiny):
    ckpt, _, reference, scorer = tiny
    audio = [noise(s, i) for i, s in enumerate((3, 10, 7.5))]
    ours = [
        r.values["clap"] for r in scorer.score([Clip(a[None], 48_000, p) for a, p in zip(audio, PROMPTS)])
    ]
    theirs = []
    for a, p in zip(audio, PROMPTS):  # one clip per call, the way a plain laion_clap loop scores
        e_audio = reference_embedding(reference, a)
        e_text = reference.get_text_embedding([p.text, p.text])[:1]  # laion_clap's text side wants >= 2
        theirs.append(float(np.sum(e_audio * e_text)))
    assert np.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    assert scorer.id.startswith("clap:laion@1,")
    assert str(ckpt) not in scorer.id  # weights named by content


def test_long_clips_are_fixed_windows_averaged(tiny):
    _, _, reference, scorer = tiny
    x = noise(14, 5)
    a = scorer.score([Clip(x[None], 48_000, PROMPTS[0])])[0]
    # two full windows starting at 0 and 4 s, embedded by the package and averaged
    starts = [0, 192_000]
    windows = np.stack([reference_embedding(reference, x[s : s + 480_000]) for s in starts])
    mean = windows.mean(0) / np.linalg.norm(windows.mean(0))
    assert np.allclose(a.artefacts["audio_embedding"], mean, atol=1e-5)


def test_random_crop_reproduces_the_package_with_a_seed(tiny):
    ckpt, text, reference, _ = tiny
    x = noise(14, 6)
    from laion_clap.training import data

    if reference.enable_fusion and data.torchaudio is None:
        with pytest.raises(ImportError, match="needs torchaudio; use crop=windows"):
            get_scorer(f"clap:laion,checkpoint={ckpt},text_model={text},crop=random")
        return
    scorer = get_scorer(f"clap:laion,checkpoint={ckpt},text_model={text},crop=random,seed=3")
    ours = scorer.score([Clip(x[None], 48_000, PROMPTS[1])])[0].artefacts["audio_embedding"]
    np.random.seed(3)
    theirs = reference.get_audio_embedding_from_data(x[None])[0]
    assert np.allclose(ours, theirs, atol=1e-5)
    assert "seed=3" in scorer.id and "crop=random" in scorer.id


def test_missing_checkpoint_and_text_model_are_one_clear_line(tiny, tmp_path):
    ckpt, text, _, _ = tiny
    with pytest.raises(FileNotFoundError, match="checkpoint=PATH"):
        get_scorer(f"clap:laion,checkpoint={tmp_path / 'none.pt'},text_model={text}")
    with pytest.raises(FileNotFoundError, match="text_model=DIR"):
        get_scorer(f"clap:laion,checkpoint={ckpt},text_model={tmp_path / 'nothing'}")


def test_a_checkpoint_of_another_architecture_is_refused(tiny):
    ckpt, text, _, _ = tiny
    with pytest.raises(ValueError, match="does not fit amodel=HTSAT-base"):
        get_scorer(f"clap:laion,checkpoint={ckpt},text_model={text},amodel=HTSAT-base")


def test_a_checkpoint_saved_without_position_ids_or_module_prefix_loads(tiny, tmp_path):
    ckpt, text, _, scorer = tiny
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    bare = {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("position_ids")}
    torch.save(bare, tmp_path / "bare.pt")  # a bare state dict, as newer tooling writes
    other = get_scorer(f"clap:laion,checkpoint={tmp_path / 'bare.pt'},text_model={text}")
    clip = Clip(noise(2, 9)[None], 48_000, PROMPTS[2])
    # the same up to float rounding (the shared scorer embedded this text in another batch)
    assert other.score([clip])[0].values["clap"] == pytest.approx(
        scorer.score([clip])[0].values["clap"], abs=1e-6
    )


def test_odd_but_valid_audio_is_scored(tiny):
    """Issue 10: tiny, 8-channel, 192 kHz, long, silent, clipped clips all end as finite scores (the
    long one is a minute here: each 10 s window of the tiny HTSAT costs ~0.5 s on CPU)."""
    *_, scorer = tiny
    clips = odd_but_valid_clips(Prompt("a", "a dog barks loudly"), long_seconds=60)
    assert_all_scored(clips, score_as_the_runner_does(scorer, clips.values()))


def air_gapped_env() -> dict[str, str]:
    """A user's environment on an air-gapped cluster: no HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set, and
    every hub request fails (a closed local port) and is retried with backoff, as on a cluster
    without DNS, so an unguarded ``import laion_clap`` spends minutes in retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    return env


def construct_in_fresh_process(specs: list[str], packages: list[str]) -> list[str]:
    """Build each scorer spec in a fresh air-gapped interpreter; each must fail with FileNotFoundError
    without importing any of ``packages``. Returns the error messages."""
    code = f"""if True:
        import json, sys
        from ttaeval import get_scorer
        messages = []
        for spec in {specs!r}:
            try:
                get_scorer(spec)
            except FileNotFoundError as exc:
                messages.append(str(exc))
        imported = [p for p in {packages!r} if p in sys.modules]
        print(json.dumps({{"messages": messages, "imported": imported}}))
    """
    done = subprocess.run(
        [sys.executable, "-c", code], env=air_gapped_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["imported"] == [] and len(out["messages"]) == len(specs), (out, done.stderr[-2000:])
    return out["messages"]


def test_checkpoint_paths_are_checked_before_laion_clap_is_imported(tmp_path):
    """Issue 20: laion_clap's import fetches tokenizers from the hub; a wrong path must not wait on it."""
    reference_package("laion_clap")
    (tmp_path / "folder.pt").mkdir()
    missing, folder = construct_in_fresh_process(
        ["clap:laion,checkpoint=/nonexistent/w.pt", f"clap:laion,checkpoint={tmp_path / 'folder.pt'}"],
        ["laion_clap"],
    )
    assert "/nonexistent/w.pt" in missing and "checkpoint=PATH" in missing
    assert str(tmp_path / "folder.pt") in folder and "not a file" in folder


def test_score_with_a_missing_checkpoint_fails_fast_without_the_hub(tmp_path):
    """Issue 20: `ttaeval score` with a wrong checkpoint, offline switches unset, ends in seconds with
    a usage error naming the path (it spent minutes in hub retries inside `import laion_clap`)."""
    import soundfile as sf

    reference_package("laion_clap")
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "p1.wav", noise(1, 0), 48_000)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"audio_id": "p1", "prompt": "a dog barks"}))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ttaeval", "score", str(folder), "--prompts", str(tmp_path / "prompts.jsonl"),
         "--scorer", "clap:laion,checkpoint=/nonexistent/w.pt", "--out", str(tmp_path / "run")],
        env=air_gapped_env(), capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode != 0 and "/nonexistent/w.pt" in done.stderr, done.stderr[-2000:]
    assert "Retrying" not in done.stderr and time.monotonic() - start < 45


@pytest.mark.slow  # two laion_clap imports (~10 s each here)
def test_local_weights_load_in_seconds_without_the_offline_switches(tmp_path):
    """Issue 20: with local files, nothing asks the hub (the user did not set HF_HUB_OFFLINE); the
    switches are the user's again afterwards."""
    torch.manual_seed(0)
    save_like_laion(package_module(False), tmp_path / "clap.pt")
    bpe_tokenizer().save_pretrained(tmp_path / "roberta")
    tiny_roberta_config().save_pretrained(tmp_path / "roberta")
    spec = f"clap:laion,checkpoint={tmp_path / 'clap.pt'},text_model={tmp_path / 'roberta'}"
    code = f"""if True:
        import os, sys
        from ttaeval import get_scorer
        get_scorer({spec!r})
        from huggingface_hub import constants
        assert "laion_clap" in sys.modules and not constants.HF_HUB_OFFLINE
        assert "HF_HUB_OFFLINE" not in os.environ and "TRANSFORMERS_OFFLINE" not in os.environ
    """
    done = subprocess.run(
        [sys.executable, "-c", code], env=air_gapped_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Retrying" not in done.stderr, done.stderr[-2000:]
