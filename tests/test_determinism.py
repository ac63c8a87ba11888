"""Every backend scores the same clip bit-identically in two separate processes.

One session builds the tiny checkpoints of every backend (the same builders the parity tests use);
two fresh Python processes then load them, score one 11 s clip (long enough for the windowing of
every CLAP backend) and print each value as ``float.hex``, plus a digest of the embedders' outputs on
its first 3 s (several OpenL3 frames and a PaSST window: bit-identity does not depend on how many,
and each costs a published-size forward pass).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from helpers import random_protocol_weights, reference_package

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from unittest import mock
    from ttaeval import Clip, Prompt, get_scorer, load_audio
    from ttaeval.io.audio import prepare
    from ttaeval.embedders import get_embedder

    cfg = json.loads(sys.argv[1])
    clip = load_audio(cfg["clip"])
    clip = Clip(clip.audio, clip.sample_rate, Prompt("p", "a dog barks loudly"))
    out = {}
    for spec in cfg["specs"]:
        if spec.startswith("aesthetics"):
            sys.path.insert(0, cfg["tests"])
            from audiobox_aesthetics.model import aes
            from test_aesthetics import tiny_wavlm
            with mock.patch.object(aes, "DEFAULT_AUDIO_CFG", tiny_wavlm()):
                scorer = get_scorer(spec)
        else:
            scorer = get_scorer(spec)
        result = scorer.score([prepare(clip, scorer.sample_rate, scorer.channels)])[0]
        assert result.ok, (spec, result.error)
        out[spec.split(",")[0]] = {k: float(v).hex() for k, v in result.values.items()}
    start = Clip(clip.audio[:, : 3 * clip.sample_rate], clip.sample_rate, clip.prompt)
    for name, options in cfg["embedders"].items():
        embedder = get_embedder(name, **options)
        out[name] = hashlib.sha256(embedder.fad_samples([start]).tobytes()).hexdigest()
    print(json.dumps(out, sort_keys=True))
    """
)


@pytest.mark.slow
def test_two_processes_give_bit_identical_scores(tmp_path, weights_cache):
    import test_aesthetics
    import test_clap_hf
    import test_clap_msclap
    import torch

    for package in ("laion_clap", "audiobox_aesthetics", "torchvggish", "torchopenl3", "hear21passt", "timm"):
        reference_package(package)
    from helpers import bpe_tokenizer

    torch.manual_seed(0)
    test_clap_hf.save_tiny_clap(tmp_path / "hf", bpe_tokenizer())
    (tmp_path / "msclap").mkdir()
    msclap_ckpt, gpt2 = test_clap_msclap.save_tiny_msclap(tmp_path / "msclap")
    test_aesthetics.save_tiny_aesthetics(tmp_path / "aes.pt")
    weights = random_protocol_weights(tmp_path, cache=weights_cache)  # PANNs, VGGish, OpenL3, PaSST, LAION

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "clip.wav", (0.2 * rng.standard_normal(22_050 * 11)).astype(np.float32), 22_050)
    cfg = {
        "clip": str(tmp_path / "clip.wav"),
        "tests": str(test_aesthetics.__file__.rsplit("/", 1)[0]),
        "specs": [
            "signal",
            "clap:mini",
            f"clap:hf,model={tmp_path / 'hf'}",
            f"clap:laion,checkpoint={weights['laion']},text_model={weights['roberta']}",
            f"clap:msclap,checkpoint={msclap_ckpt},text_model={gpt2}",
            f"aesthetics:audiobox,checkpoint={tmp_path / 'aes.pt'}",
        ],
        "embedders": {
            "mini": {},
            "panns": {"checkpoint": str(weights["panns"])},
            "vggish": {"checkpoint": str(weights["vggish"])},
            "openl3": {"checkpoint": str(weights["openl3"]), "channels": 2},
            "passt": {"checkpoint": str(weights["passt"])},
        },
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core each
    procs = [  # two independent processes, side by side
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, json.dumps(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert set(first) == {
        "signal",
        "clap:mini",
        "clap:hf",
        "clap:laion",
        "clap:msclap",
        "aesthetics:audiobox",
    } | {
        "mini",
        "panns",
        "vggish",
        "openl3",
        "passt",
    }
    assert first == second
