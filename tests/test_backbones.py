"""Our PANNs Cnn14 and VGGish against the published packages' own classes, same random weights.

References: ``frechet_audio_distance``'s ``Cnn14_16k`` (its module loaded by path: the package's
``__init__`` imports torchaudio and encodec) and ``torchvggish`` 0.2's ``VGG`` and
``waveform_to_examples`` (with the final ReLU dropped, as frechet_audio_distance does for FAD).
Checkpoints are saved the way the released files are (``{"model": ...}`` for PANNs, a bare state
dict for VGGish) and loaded by our loaders.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import random_protocol_weights, reference_package
from ttaeval import Clip
from ttaeval.embedders import frechet_audio_distance, get_embedder


def fad_pann_module():
    reference_package("torchlibrosa")
    spec = importlib.util.find_spec("frechet_audio_distance")
    if spec is None:
        reference_package("frechet_audio_distance")
    root = spec.submodule_search_locations[0]
    name = "_reference_fad_models"
    if name not in sys.modules:
        pkg = importlib.util.spec_from_file_location(
            name, f"{root}/models/__init__.py", submodule_search_locations=[f"{root}/models"]
        )
        module = importlib.util.module_from_spec(pkg)
        sys.modules[name] = module
        pkg.loader.exec_module(module)
    return importlib.import_module(f"{name}.pann")


@pytest.fixture(scope="module")
def panns(tmp_path_factory):
    pann = fad_pann_module()
    torch.manual_seed(0)
    reference = pann.Cnn14_16k(
        sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000, classes_num=527
    ).eval()
    for m in reference.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("panns") / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": reference.state_dict(), "iteration": 1}, path)
    return path, reference


def test_panns_equals_the_reference_cnn14(panns):
    path, reference = panns
    embedder = get_embedder("panns", checkpoint=str(path), variant="16k", batch_size=2)
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (2, 3.5, 2)]
    ours = embedder.outputs([Clip(a[None], 16_000) for a in audio])
    with torch.no_grad():
        for i, a in enumerate(audio):  # one clip per call, like frechet_audio_distance
            theirs = reference(torch.from_numpy(a)[None])
            assert np.allclose(ours[i]["audio_embedding"], theirs["embedding"][0].numpy(), atol=1e-5)
            probs = 1 / (1 + np.exp(-ours[i]["logits"]))
            assert np.allclose(probs, theirs["clipwise_output"][0].numpy(), atol=1e-5)
    assert {k: a.shape for k, a in ours[0].items()} == {"audio_embedding": (2048,), "logits": (527,)}


def test_panns_refuses_a_checkpoint_of_another_variant(panns):
    path, _ = panns
    with pytest.raises(ValueError, match="does not fit"):
        get_embedder("panns", checkpoint=str(path), variant="32k")
    with pytest.raises(FileNotFoundError, match="checkpoint=PATH"):
        get_embedder("panns")


@pytest.fixture(scope="module")
def vggish(tmp_path_factory):
    tv = reference_package("torchvggish")
    torch.manual_seed(0)
    reference = tv.torchvggish._vgg(postprocess=False).eval()
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(reference.state_dict(), path)
    # FAD drops the final ReLU
    reference.embeddings = torch.nn.Sequential(*list(reference.embeddings.children())[:-1])
    return path, reference, tv


def test_vggish_equals_torchvggish(vggish):
    path, reference, tv = vggish
    from ttaeval.backbones.vggish import log_mel_examples

    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(16_000 * 3 + 1234)).astype(np.float32)
    theirs_input = tv.vggish_input.waveform_to_examples(x, 16_000, return_tensor=False)
    ours_input = log_mel_examples(x)
    assert ours_input.shape == theirs_input.shape == (3, 96, 64)
    assert np.allclose(ours_input, theirs_input, atol=1e-4)
    embedder = get_embedder("vggish", checkpoint=str(path))
    frames = embedder.embed_frames([Clip(x[None], 16_000)])[0]
    with torch.no_grad():
        expected = reference(torch.from_numpy(theirs_input.astype(np.float32))[:, None]).numpy()
    assert np.allclose(frames, expected, atol=1e-4)


def test_vggish_fad_uses_every_example_as_a_sample(vggish):
    path, _, _ = vggish
    embedder = get_embedder("vggish", checkpoint=str(path))
    rng = np.random.default_rng(2)
    clips = [Clip((0.1 * rng.standard_normal(16_000 * 2)).astype(np.float32)[None], 16_000) for _ in range(3)]
    assert embedder.fad_samples(clips).shape == (6, 128)  # two 0.96 s examples per 2 s clip
    assert embedder.embed(clips).shape == (3, 128)
    assert frechet_audio_distance(embedder, clips, clips) == 0.0


def test_encodec_frames_are_the_encoder_output(tmp_path):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(
        num_filters=4, upsampling_ratios=[4, 4], hidden_size=8, codebook_size=16, num_lstm_layers=1,
        sampling_rate=24_000, audio_channels=1, target_bandwidths=[1.5],
    )  # fmt: skip
    model = EncodecModel(config).eval()
    model.save_pretrained(tmp_path / "encodec")
    embedder = get_embedder("encodec", model=str(tmp_path / "encodec"))
    rng = np.random.default_rng(5)
    clips = [Clip((0.1 * rng.standard_normal(n)).astype(np.float32)[None], 24_000) for n in (24_000, 12_000)]
    frames = embedder.embed_frames(clips)
    with torch.no_grad():
        for clip, got in zip(clips, frames):
            expected = model.encoder(torch.from_numpy(clip.audio)[None])[0].T.numpy()
            assert got.shape == expected.shape == (clip.num_samples // 16, 8)
            assert np.allclose(got, expected, atol=1e-6)
    assert embedder.fad_samples(clips).shape == (2250, 8)
    assert frechet_audio_distance(embedder, clips, clips) == 0.0
    with pytest.raises(FileNotFoundError, match="model=DIR"):
        get_embedder("encodec")


def test_openl3_frames_equal_torchopenl3(tmp_path):
    tl3 = reference_package("torchopenl3")
    from torchopenl3.models import PytorchOpenl3

    torch.manual_seed(0)
    model = PytorchOpenl3(input_repr="mel256", embedding_size=512, content_type="env").eval()
    torch.save(model.state_dict(), tmp_path / "openl3.pth")
    rng = np.random.default_rng(6)
    x = np.clip(0.3 * rng.standard_normal(int(48_000 * 2.3)), -0.8, 0.8).astype(np.float32)
    x[0] = 0.9  # the peak: normalised to -1 dBFS
    mono = get_embedder("openl3", checkpoint=str(tmp_path / "openl3.pth"), bandwidth=48_000)
    ours = mono.embed_frames([Clip(x[None], 48_000)])[0]
    scaled = x * (10 ** (-1 / 20) / 0.9)
    theirs, _ = tl3.get_audio_embedding(scaled, 48_000, model=model, hop_size=0.5, center=True, verbose=False)
    assert ours.shape == tuple(theirs.shape[1:]) == (5, 512)  # 0.5 s centring + 2.3 s: frames at 0..2 s
    assert np.allclose(ours, theirs[0].numpy(), atol=1e-4)
    stereo = get_embedder("openl3", checkpoint=str(tmp_path / "openl3.pth"), bandwidth=48_000, channels=2)
    frames_run = []
    stereo.net.register_forward_hook(lambda _m, inputs, _out: frames_run.append(len(inputs[0])))
    both = stereo.embed_frames([Clip(x[None], 48_000)])[0]  # mono duplicated: L and R embeddings equal
    assert sum(frames_run) == 5  # and the network ran once for both
    assert both.shape == (5, 1024) and np.allclose(both[:, :512], ours) and np.allclose(both[:, 512:], ours)
    left = x[:24_000]  # a stereo clip whose channels differ (same peak): each half is its own channel's
    right = np.roll(left, 12_000)  # same samples, so the same peak; a magnitude spectrum hides -left
    apart = stereo.embed_frames([Clip(np.stack([left, right]), 48_000)])[0]
    halves = mono.embed_frames([Clip(left[None], 48_000), Clip(right[None], 48_000)])
    assert np.array_equal(apart[:, :512], halves[0]) and np.array_equal(apart[:, 512:], halves[1])
    assert not np.allclose(halves[0], halves[1])

    sam = get_embedder("openl3", checkpoint=str(tmp_path / "openl3.pth"), channels=2)  # 44.1 kHz bandwidth
    ref = [Clip((0.3 * rng.standard_normal(8_000)).astype(np.float32)[None], 16_000) for _ in range(2)]
    assert frechet_audio_distance(sam, ref, ref) == 0.0
    hum = [Clip(0.5 * np.sin(np.arange(8_000, dtype=np.float32) / 5)[None], 16_000)] * 2
    assert frechet_audio_distance(sam, hum, ref) > 0


def test_passt_logits_equal_hear21passt(tmp_path):
    """Our PaSST path vs hear21passt's own ``AugmentMelSTFT`` (eval) + network on the same weights.

    hear21passt's preprocessing imports torchaudio, which cannot be installed here: a stand-in
    module supplies only ``torchaudio.compliance.kaldi.get_mel_banks`` (our ``kaldi_mel_banks``,
    checked on its own below) so that the package's pre-emphasis, STFT, power, log and
    normalisation code runs as the reference.
    """
    import contextlib
    import io
    import types

    reference_package("hear21passt")
    reference_package("timm")
    from ttaeval.backbones.passt import kaldi_mel_banks, passt_models

    banks = kaldi_mel_banks()
    # Kaldi's filters: 128 triangles peaking at 1 on the mel grid between 0 and 15 kHz, none above
    assert banks.shape == (128, 513) and banks.max() <= 1.0 and banks[:, 481:].max() == 0.0
    assert np.all(banks.sum(axis=1) > 0)
    with contextlib.redirect_stdout(io.StringIO()):
        net = (
            passt_models()
            .passt.get_model(
                arch="passt_s_swa_p16_128_ap476", pretrained=False, fstride=10, tstride=10, input_tdim=998
            )
            .eval()
        )
    torch.save(net.state_dict(), tmp_path / "passt.pt")

    fake = types.ModuleType("torchaudio")
    kaldi = types.SimpleNamespace(
        get_mel_banks=lambda n, fft, sr, lo, hi, **k: (torch.from_numpy(banks[:, :-1]), None)
    )
    fake.compliance = types.SimpleNamespace(kaldi=kaldi)
    fake.transforms = types.SimpleNamespace(
        FrequencyMasking=lambda *a, **k: None, TimeMasking=lambda *a, **k: None
    )
    saved = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = fake
    try:
        spec = importlib.util.spec_from_file_location(
            "_reference_passt_preprocess",
            Path(importlib.util.find_spec("hear21passt").submodule_search_locations[0])
            / "models"
            / "preprocess.py",
        )
        preprocess = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(preprocess)
        mel = preprocess.AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024,
                                        freqm=0, timem=0, htk=False, fmin=0.0, fmax=None, norm=1,
                                        fmin_aug_range=10, fmax_aug_range=2000).eval()  # fmt: skip
    finally:
        sys.modules.pop("torchaudio") if saved is None else sys.modules.__setitem__("torchaudio", saved)

    embedder = get_embedder("passt", checkpoint=str(tmp_path / "passt.pt"))
    rng = np.random.default_rng(7)
    for seconds in (1.2, 6.0):  # under 15% of a window: kept short; else zero-padded to 10 s
        x = np.clip(0.1 * rng.standard_normal(int(32_000 * seconds)), -0.5, 0.5).astype(np.float32)
        x[3] = 0.8  # the peak
        ours = embedder.logits([Clip(x[None], 32_000)])[0]
        w = x * np.float32(10 ** (-1 / 20) / 0.8)
        if seconds > 1.5:
            w = np.pad(w, (0, 320_000 - len(w)))
        with torch.no_grad():
            theirs = net(mel(torch.from_numpy(w)[None])[:, None])[0][0].numpy()
        assert np.allclose(ours, theirs, atol=1e-4), np.abs(ours - theirs).max()


def test_passt_scores_without_printing_its_debug_shapes(tmp_path, capfd, weights_cache):
    from ttaeval.backbones.passt import load_passt, passt_models

    weights = random_protocol_weights(tmp_path, ("passt",), cache=weights_cache)
    passt_models().passt.first_RUN = True  # as a fresh import leaves it
    capfd.readouterr()
    loaded = load_passt(str(weights["passt"]))
    with torch.no_grad():
        loaded(torch.zeros(1, 1, 128, 100))  # a 1 s input: the first forward pass of any length prints
    assert capfd.readouterr().out == ""
