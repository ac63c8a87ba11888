"""A tiny, randomly initialised TangoFlux folder built from configs (no hub), laid out like the
``declare-lab/TangoFlux`` snapshot the ``tangoflux`` generator reads:

    config.json             TangoFlux's model config (``text_encoder_name`` left as the release's)
    tangoflux.safetensors   the TangoFlux module's weights (transformer, fc, duration embedder, T5)
    vae/                    an AutoencoderOobleck (diffusers layout) at an unusual rate
    text_encoder/           a T5 encoder and its tokenizer (a small Unigram vocabulary trained here)

About 2 MB, built in a second or two. The transformer's head dimension is 128 because TangoFlux
keeps FluxTransformer2DModel's default rotary axes (16 + 56 + 56), and the latent has 64 channels
because ``inference_flow`` draws 64-channel noise.
"""

from __future__ import annotations

import json
from pathlib import Path

RATE = 8_000
"""The tiny VAE's sampling rate (the clips must carry the model's own)."""
HOP = 32
"""The tiny VAE's downsampling (2 * 4 * 4)."""
AUDIO_SEQ_LEN = 32
"""Latent frames: 32 * 32 / 8000 = 0.128 s of audio at most."""
MAX_DURATION = 1
"""The duration embedder's range (seconds)."""
CHANNELS = 2

CONFIG = {
    "num_layers": 1,
    "num_single_layers": 1,
    "in_channels": 64,
    "attention_head_dim": 128,
    "joint_attention_dim": 16,  # = the T5 width (TangoFlux feeds T5 states and its fc output to it)
    "num_attention_heads": 1,
    "audio_seq_len": AUDIO_SEQ_LEN,
    "max_duration": MAX_DURATION,
    "uncondition": False,
    "text_encoder_name": "google/flan-t5-large",  # as released: the generator finds text_encoder/
}
CORPUS = ["a dog barks loudly", "rain falls on a roof", "a bell rings twice", "an engine idles"] * 50


def t5_tokenizer(model_max_length: int = 32):
    """A T5 tokenizer (transformers' own class) over a small Unigram vocabulary trained here: ids
    0, 1, 2 are ``<pad>``, ``</s>``, ``<unk>`` and every text ends with ``</s>``, as in FLAN-T5's (so
    the empty prompt of classifier-free guidance is one token, not an all-masked row)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS, trainer)
    vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def write_tiny_tangoflux(folder: Path, seed: int = 0) -> Path:
    """Write the tiny TangoFlux folder into ``folder`` (created) and return it."""
    import torch
    from diffusers import AutoencoderOobleck
    from safetensors.torch import save_model
    from tangoflux.model import TangoFlux
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    tokenizer = t5_tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "text_encoder")

    vae = AutoencoderOobleck(
        encoder_hidden_size=4,
        downsampling_ratios=[2, 4, 4],
        channel_multiples=[1, 2, 2],
        decoder_channels=4,
        decoder_input_channels=64,
        audio_channels=CHANNELS,
        sampling_rate=RATE,
    )
    vae.save_pretrained(folder / "vae")

    # The package's own module, built from the config with the local text encoder: its weights are
    # the ones a TangoFlux checkpoint holds (the T5 encoder included, its tied embedding excluded).
    model = TangoFlux({**CONFIG, "text_encoder_name": str(folder / "text_encoder")})
    save_model(model, str(folder / "tangoflux.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return folder
