"""``device`` and ``dtype`` of the torch scorers and embedders.

``dtype=bfloat16`` runs the forward passes under autocast (weights stay float32, outputs are float32):
the numbers must stay close to float32's, and must differ from them (else autocast never ran, as it
would not in Audiobox-Aesthetics, whose forward switches an outer autocast off at its "32"). The
scorer id carries ``dtype`` only when it is not float32, so every id stored before the option
existed stays valid. ``device=auto`` is the local GPU, else the CPU, resolved when the model loads.

Tolerances are set a little above the max |bf16 - fp32| measured on this CPU (given beside each);
bfloat16 keeps 8 bits of mantissa, so another CPU's kernels may round differently, not by much more.
On an H200 (``device=auto`` -> cuda:0) the same clips gave, against CPU float32: clap:mini cosine
0.0008 (bf16) / 0.0002 (fp16); judge:mini aqa 0.011 / 0.0013, quality 0.016 / 0.0035; float32 on the
GPU within 0.0009 of the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import ClassVar
from unittest import mock

import numpy as np
import pytest
import torch

from helpers import bpe_tokenizer, reference_package
from ttaeval import Clip, Prompt, get_scorer
from ttaeval.backbones.clap_mini import DEFAULT_CHECKPOINT
from ttaeval.checkpoints import weights_digest
from ttaeval.devices import resolve_device
from ttaeval.scorers import SCORERS
from ttaeval.synth.scenes import Scene, render
from ttaeval.synth.suites import accuracy_suite


@pytest.fixture(scope="module")
def scene_clips() -> list[Clip]:
    """Eight rendered scenes of the synthetic world with their prompts (event lists, relations)."""
    return [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, p) for p in accuracy_suite()[:8]]


def values(scorer, clips, metric: str) -> np.ndarray:
    return np.array([r.values[metric] for r in scorer.score(clips)])


# -- (a) the shipped mini models: bfloat16 autocast on the CPU agrees with float32 ----------------------
CLAP_TOL = 0.005
"""CLAP cosine: measured max |bf16 - fp32| 0.00082 over these 8 clips (embeddings 0.0021)."""


def test_clap_mini_in_bfloat16_agrees_with_float32(scene_clips):
    fp32, bf16 = get_scorer("clap:mini"), get_scorer("clap:mini,dtype=bfloat16")
    a, b = fp32.score(scene_clips), bf16.score(scene_clips)
    diff = np.abs(np.array([r.values["clap"] for r in a]) - [r.values["clap"] for r in b])
    assert 0 < diff.max() <= CLAP_TOL, diff.max()  # > 0: autocast ran
    emb = np.stack([r.artefacts["audio_embedding"] for r in b])
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    emb32 = np.stack([r.artefacts["audio_embedding"] for r in a])
    assert np.abs(emb - emb32).max() <= 0.01  # measured 0.0021


def test_embed_mini_in_bfloat16_agrees_with_float32(scene_clips):
    clips = [Clip(c.audio, c.sample_rate) for c in scene_clips]
    a = get_scorer("embed:mini").embed(clips)
    b = get_scorer("embed:mini,dtype=bfloat16").embed(clips)
    assert b.dtype == np.float32 and 0 < np.abs(a - b).max() <= 0.01  # measured 0.0021


JUDGE_TOL = {"aqa": 0.03, "events": 0.03, "relation": 0.03, "total": 0.03, "quality": 0.05}
"""judge-mini: measured max |bf16 - fp32| over these 8 clips: aqa 0.014, events 0.0033, relation
0.0034, total 0.0037 (yes-scores, 0-1); quality 0.0165 (expected rating, 1-9)."""


def test_judge_mini_in_bfloat16_agrees_with_float32(scene_clips):
    fp32, bf16 = get_scorer("judge:mini"), get_scorer("judge:mini,dtype=bfloat16")
    a, b = fp32.score(scene_clips), bf16.score(scene_clips)
    largest = 0.0
    for metric, tol in JUDGE_TOL.items():
        va, vb = (np.array([r.values[metric] for r in rs]) for rs in (a, b))
        read = np.isfinite(va)  # relation: NaN (not applicable) where a prompt states no order
        assert read.sum() >= 3 and np.array_equal(read, np.isfinite(vb)), metric
        diff = np.abs(va - vb)[read].max()
        largest = max(largest, diff)
        assert diff <= tol, (metric, diff)
    assert largest > 0  # autocast ran


# -- (b) the id: dtype only when it is not float32; device and batch size never -----------------------
def test_float32_keeps_the_id_of_a_scorer_without_the_option():
    weights = weights_digest(DEFAULT_CHECKPOINT)
    assert get_scorer("clap:mini").id == f"clap:mini@1,weights={weights}"  # as stored before dtype existed
    for spec in ("clap:mini", "embed:mini", "judge:mini"):
        plain = get_scorer(spec).id
        assert "dtype" not in plain
        assert get_scorer(f"{spec},dtype=float32").id == plain
        assert get_scorer(f"{spec},device=auto,batch_size=3").id == plain
        bf16 = get_scorer(f"{spec},dtype=bfloat16").id
        assert bf16 != plain and ",dtype=bfloat16," in bf16
        assert bf16.replace("dtype=bfloat16,", "") == plain  # only the precision differs


def test_the_id_rule_holds_for_any_scorer_with_a_neutral_option():
    """The rule lives in ``Scorer.id``: a backend's own ``identity_options`` need not know it."""
    from ttaeval.scorers.base import MetricSpec, Scorer

    @dataclasses.dataclass
    class Knobs(Scorer):
        name, backend = "knobs", "test"
        metrics = (MetricSpec("x", True),)
        id_neutral: ClassVar[dict[str, object]] = {"dtype": "float32", "mode": "plain"}
        mode: str = "plain"
        dtype: str = "float32"
        batch_size: int = 1

        def score_batch(self, clips):
            return []

    @dataclasses.dataclass
    class Digest(Knobs):
        def identity_options(self):  # says nothing of dtype or mode
            return {"weights": "abc"}

    assert Knobs().id == "knobs:test@1"
    assert Knobs(mode="fast", dtype="bfloat16").id == "knobs:test@1,dtype=bfloat16,mode=fast"
    assert Digest().id == "knobs:test@1,weights=abc"
    assert Digest(dtype="float16").id == "knobs:test@1,dtype=float16,weights=abc"


# -- (c) a bad dtype fails at construction, before any weight is read ----------------------------------
TORCH_SPECS = (
    "clap:mini",
    "clap:mini-heldout",
    "clap:hf",
    "clap:laion",
    "clap:msclap",
    "aesthetics:audiobox",
    "judge:hf",
    "judge:mini",
    "judge:mini-v1",
    "judge:mini-eval",
    "embed:mini",
    "embed:vggish",
    "embed:panns",
    "embed:openl3",
    "embed:passt",
    "embed:encodec",
)
"""Every registered backend that runs a torch model."""


def test_every_torch_backend_has_device_and_dtype():
    """No backend with a ``device`` lacks ``dtype`` (or the other way), and the list above is all."""
    with_dtype = set()
    for entry in SCORERS:
        fields = {f.name: f.default for f in dataclasses.fields(entry.load())}
        assert ("device" in fields) == ("dtype" in fields), entry.name
        if "dtype" in fields:
            assert fields["dtype"] == "float32", entry.name
            with_dtype.add(entry.name)
    assert with_dtype == set(TORCH_SPECS)


@pytest.mark.parametrize("dtype", ["float64", "bf16"])
@pytest.mark.parametrize("spec", TORCH_SPECS)
def test_an_unknown_dtype_fails_at_construction_naming_the_choices(spec, dtype, tmp_path):
    # a checkpoint/model that does not exist: the dtype is refused before it is looked for
    cls = SCORERS.get(spec)
    where = {f.name for f in dataclasses.fields(cls) if f.init} & {"checkpoint", "model"}
    missing = {name: tmp_path / "none" for name in where}
    with pytest.raises(
        ValueError, match=rf"^{spec}: dtype '{dtype}': expected one of float32, bfloat16, float16$"
    ):
        get_scorer(f"{spec},dtype={dtype}", **missing)


# -- (d) device=auto ---------------------------------------------------------------------------------
def test_device_auto_resolves_where_the_model_loads_and_scores(scene_clips):
    here = str(resolve_device("auto"))
    assert here == ("cuda:0" if torch.cuda.is_available() else "cpu")
    auto = get_scorer("clap:mini,device=auto")
    assert auto.device == here and auto.model.logit_scale.device == torch.device(here)
    scores = values(auto, scene_clips, "clap")
    assert np.isfinite(scores).all()
    if here == "cpu":  # the same computation as device=cpu
        assert np.array_equal(scores, values(get_scorer("clap:mini"), scene_clips, "clap"))
    judge = get_scorer("judge:mini,device=auto,w_events=0,w_relation=0,w_quality=0")
    assert judge.device == here and np.isfinite(values(judge, scene_clips[:2], "aqa")).all()


# -- the other torch backends on their tests' tiny random models ---------------------------------------
def noise(rate: int, seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((1, int(rate * seconds)))).astype(np.float32)


PROMPT = Prompt(
    "p",
    "a dog barks loudly",
    attributes={"event_list": ["a dog barking", "rain"], "event_relation": "sequence"},
)


def tiny_clap_hf(tmp_path):
    from test_clap_hf import save_tiny_clap

    save_tiny_clap(tmp_path, bpe_tokenizer())
    return f"clap:hf,model={tmp_path}", [Clip(noise(48_000, 3, i), 48_000, PROMPT) for i in range(2)], None


def tiny_aesthetics(tmp_path):
    reference_package("audiobox_aesthetics")
    from audiobox_aesthetics.model import aes
    from test_aesthetics import save_tiny_aesthetics, tiny_wavlm

    save_tiny_aesthetics(tmp_path / "checkpoint.pt")
    clips = [Clip(noise(16_000, 3, i), 16_000) for i in range(2)]
    return (
        f"aesthetics:audiobox,checkpoint={tmp_path / 'checkpoint.pt'}",
        clips,
        mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()),
    )


def tiny_judge_hf(tmp_path):
    from test_judge import save_tiny_qwen2_audio

    save_tiny_qwen2_audio(tmp_path)
    return f"judge:hf,model={tmp_path}", [Clip(noise(16_000, 2, i), 16_000, PROMPT) for i in range(2)], None


def tiny_vggish(tmp_path):
    from ttaeval.backbones.vggish import VGGish

    torch.manual_seed(0)
    torch.save(VGGish().state_dict(), tmp_path / "vggish.pth")
    clips = [Clip(noise(16_000, 2, i), 16_000) for i in range(2)]
    return f"embed:vggish,checkpoint={tmp_path / 'vggish.pth'}", clips, None


def tiny_encodec(tmp_path):
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(
        num_filters=4, upsampling_ratios=[4, 4], hidden_size=8, codebook_size=16, num_lstm_layers=1,
        sampling_rate=24_000, audio_channels=1, target_bandwidths=[1.5],
    )  # fmt: skip
    EncodecModel(config).eval().save_pretrained(tmp_path / "encodec")
    return (
        f"embed:encodec,model={tmp_path / 'encodec'}",
        [Clip(noise(24_000, 1, i), 24_000) for i in range(2)],
        None,
    )


def tiny_openl3(tmp_path):
    reference_package("torchopenl3")
    from torchopenl3.models import PytorchOpenl3

    torch.manual_seed(0)
    net = PytorchOpenl3(input_repr="mel256", embedding_size=512, content_type="env").eval()
    torch.save(net.state_dict(), tmp_path / "openl3.pth")
    return (
        f"embed:openl3,checkpoint={tmp_path / 'openl3.pth'},bandwidth=48000",
        [Clip(noise(48_000, 1, 0), 48_000)],
        None,
    )


TINY = {
    # spec: (builder, tolerance, what was measured on this CPU). Metrics: max |bf16 - fp32|;
    # embedders: max |bf16 - fp32| / max |fp32| over every artefact.
    "clap:hf": (tiny_clap_hf, 0.02, "cosine 0.0027"),
    "aesthetics:audiobox": (tiny_aesthetics, 0.05, "CE/CU/PC/PQ (1-10) 0.0016"),
    "judge:hf": (tiny_judge_hf, 0.02, "yes-scores 0.0003, quality 0.0003"),
    "embed:vggish": (tiny_vggish, 0.05, "relative 0.0039"),
    "embed:encodec": (tiny_encodec, 0.05, "relative 0.014"),
    "embed:openl3": (tiny_openl3, 0.05, "relative 0.0068"),
}
NOT_HERE = {
    "clap:laion": "HTSAT + a 768-wide RoBERTa, ~18 s to build, load twice and score (cosine diff 0.0005)",
    "clap:msclap": "HTSAT + a 768-wide GPT-2, ~15 s (cosine diff 0.0002)",
    "embed:panns": "full-size Cnn14 (80M parameters), ~8 s (relative diff 0.0054)",
    "embed:passt": "full-size PaSST, ~16 s (relative diff 0.0054)",
}
"""Backends whose tiny models are not cheap (> 5 s on this CPU): not run here. The numbers were
measured once the same way; the dtype checks above still construct them."""
MINI = {"clap:mini", "clap:mini-heldout", "judge:mini", "judge:mini-v1", "judge:mini-eval", "embed:mini"}
"""Covered by the shipped-weights tests above (the heldout, v1 and eval variants share their code)."""


def test_every_torch_backend_is_checked_or_said_why_not():
    assert set(TINY) | set(NOT_HERE) | MINI == set(TORCH_SPECS)
    assert not (set(TINY) & set(NOT_HERE))


@pytest.mark.parametrize("spec", sorted(TINY))
def test_tiny_models_in_bfloat16_agree_with_float32(spec, tmp_path):
    build, tol, _ = TINY[spec]
    base, clips, patch = build(tmp_path)
    with patch or contextlib.nullcontext():
        fp32, bf16 = get_scorer(base), get_scorer(f"{base},dtype=bfloat16")
    assert bf16.id != fp32.id and "dtype=bfloat16" in bf16.id
    a, b = fp32.score(clips), bf16.score(clips)
    assert all(r.ok for r in a + b), [r.error for r in a + b]
    diffs = [abs(x.values[m.name] - y.values[m.name]) for x, y in zip(a, b) for m in fp32.metrics]
    for x, y in zip(a, b):
        for name, art in x.artefacts.items():
            assert y.artefacts[name].dtype == np.float32
            diffs.append(np.abs(art - y.artefacts[name]).max() / np.abs(art).max())
    assert diffs and 0 < max(diffs) <= tol, max(diffs)
