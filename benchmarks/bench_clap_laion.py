"""clap:laion throughput: our scorer vs a plain laion_clap loop scoring one file per call.

Both sides use the same random-initialised LAION-CLAP (HTSAT-tiny audio tower, a full-size
roberta-base text tower built from its config, saved as a released checkpoint), the same 200 clips
of 10 s (16 kHz wav files, as many TTA systems write them) and the same prompts.

- plain: the loop a user writes with laion_clap — per file, ``get_audio_embedding_from_filelist
  ([path])`` (librosa load + resample to 48 kHz) and ``get_text_embedding`` of its prompt, cosine.
- ours: ``ttaeval.scoring.score_items`` (what ``ttaeval score`` runs): threaded decoding, one soxr
  resample per clip, batched audio tower, text embeddings batched and cached, results committed
  to a run store.

Run: ``python benchmarks/bench_clap_laion.py [N]``; writes benchmarks/results/clap_laion.md.
Needs the [laion] extra and laion_clap (``make test`` installs both).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import bpe_tokenizer
from ttaeval import Prompt, get_scorer
from ttaeval.folder import collect_folder
from ttaeval.scoring import score_items
from ttaeval.store import RunStore

RATE = 16_000
SECONDS = 10


def build(folder: Path):
    """A random LAION-CLAP saved as the releases are, its text folder, and the package's module."""
    import laion_clap
    from laion_clap.clap_module import model as laion_model
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    torch.manual_seed(0)
    with mock.patch.object(laion_model.RobertaModel, "from_pretrained", lambda *a, **k: RobertaModel(config)):
        module = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    state = {"module." + k: v for k, v in module.model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514).expand(1, -1)
    torch.save({"state_dict": state}, folder / "clap.pt")
    text = folder / "roberta"
    tok = bpe_tokenizer()
    tok.save_pretrained(text)
    config.save_pretrained(text)
    module.tokenize = tok
    return module.eval(), text


def main(n: int = 200) -> str:
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        module, text = build(folder)
        audio_dir = folder / "audio"
        audio_dir.mkdir()
        rng = np.random.default_rng(0)
        words = ["dog", "rain", "bell", "engine", "bird", "siren", "drum", "wind"]
        prompts = [
            Prompt(f"p{i:04d}", f"a {words[i % 8]} and a {words[(i * 3 + 1) % 8]} number {i}")
            for i in range(n)
        ]
        for p in prompts:
            sf.write(
                audio_dir / f"{p.id}.wav",
                (0.1 * rng.standard_normal(RATE * SECONDS)).astype(np.float32),
                RATE,
            )
        files = sorted(audio_dir.glob("*.wav"))

        start = time.perf_counter()
        plain = []
        for path, p in zip(files, prompts):
            a = module.get_audio_embedding_from_filelist([str(path)])
            t = module.get_text_embedding([p.text, p.text])[:1]  # its text side wants two or more
            plain.append(float(np.sum(a * t)))
        plain_s = time.perf_counter() - start

        start = time.perf_counter()
        scorer = get_scorer(f"clap:laion,checkpoint={folder / 'clap.pt'},text_model={text}")
        items, _ = collect_folder(audio_dir, prompts, "bench")
        with RunStore(folder / "run") as store:
            store.add_prompts(prompts)
            store.record_run("bench_clap_laion", {}, [scorer])
            summary = score_items(items, [scorer], store, batch_size=32)
            ours_table = store.scores()
        ours_s = time.perf_counter() - start
        assert summary.all_ok
        ours = ours_table.sort_values("prompt_id")["value"].to_numpy()
        diff = float(np.max(np.abs(ours - np.array(plain))))

    lines = [
        "# clap:laion throughput: ttaeval vs a plain laion_clap loop",
        "",
        f"{n} clips of {SECONDS} s (16 kHz wav), random HTSAT-tiny + roberta-base-sized LAION-CLAP, "
        f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores. Our time includes building the scorer (loading the checkpoint).",
        "",
        "| | seconds | clips/s |",
        "|---|---|---|",
        f"| plain laion_clap loop, one file per call | {plain_s:.1f} | {n / plain_s:.2f} |",
        f"| ttaeval score_items (clap:laion) | {ours_s:.1f} | {n / ours_s:.2f} |",
        "",
        f"Speed-up: **{plain_s / ours_s:.2f}x**. Largest score difference between the two: {diff:.2e} "
        "(soxr vs librosa resampling, batched vs single forward passes).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    out = Path(__file__).parent / "results" / "clap_laion.md"
    out.write_text(report, encoding="utf-8")
    print(report)
