"""judge:hf on a tiny random-initialised Qwen2-Audio built offline from configs.

The processor (Whisper feature extractor with a 4 s window, a BPE tokenizer trained in-process with
Qwen's audio placeholder tokens, a chat template) and the model are saved with ``save_pretrained``
and loaded by the scorer; its batched, left-padded scores must equal a direct, unbatched model
call per question.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import (
    CORPUS,
    assert_all_scored,
    bpe_tokenizer,
    odd_but_valid_clips,
    reference_package,
    score_as_the_runner_does,
)
from ttaeval import Clip, Prompt, get_scorer

SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
    "<unk>",
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen2_audio(folder):
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioEncoderConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Config,
        WhisperFeatureExtractor,
    )

    words = (
        "Does this audio contain the sound events described by the text Yes No yes no Can you hear in "
        "Rate sound quality 1 2 3 4 5 6 7 8 9"
    )
    tok = bpe_tokenizer(
        CORPUS + [words] * 20, special=SPECIAL, eos_token="<|im_end|>", bos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<unk>",
    )  # fmt: skip
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL[1:6])})
    fe = WhisperFeatureExtractor(
        feature_size=64, sampling_rate=16_000, hop_length=160, chunk_length=4, n_fft=400
    )
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=CHAT_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config=Qwen2AudioEncoderConfig(
            num_mel_bins=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
            max_source_positions=200,
        ),
        text_config=Qwen2Config(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1,
        ),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("judge")
    model, processor = save_tiny_qwen2_audio(folder)
    return folder, model, processor


OMNI_SPECIAL = (*SPECIAL[:6], "<|vision_bos|>", "<|vision_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<unk>")
# The processor reads these named tokenizer attributes; transformers saves them in tokenizer_config.json.
OMNI_NAMED = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}


def omni_processor(processor_class, words: str):
    """An Omni processor built offline: a tiny BPE tokenizer that holds ``words`` (the answer tokens
    among them, as single tokens), a 64-band Whisper extractor with a 4 s window, the Qwen2-VL image
    and video processors (they need torchvision)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor, WhisperFeatureExtractor

    tok = bpe_tokenizer(
        CORPUS + [words] * 20, special=OMNI_SPECIAL, eos_token="<|im_end|>", bos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token="<unk>", extra_special_tokens=list(OMNI_SPECIAL[1:10]),
        **OMNI_NAMED,
    )  # fmt: skip
    fe = WhisperFeatureExtractor(
        feature_size=64, sampling_rate=16_000, hop_length=160, chunk_length=4, n_fft=400
    )
    return processor_class(
        image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=fe, tokenizer=tok, chat_template=CHAT_TEMPLATE,
    )  # fmt: skip


def save_tiny_qwen25_omni(folder, full: bool = False):
    """A tiny Qwen2.5-Omni thinker (``full``: wrapped in the whole Omni model, talker disabled, as a
    released folder is laid out) with its processor. The processor needs the Qwen2-VL image and video
    processors, and those need torchvision."""
    from transformers import (
        Qwen2_5OmniAudioEncoderConfig,
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniProcessor,
        Qwen2_5OmniTextConfig,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2_5OmniVisionEncoderConfig,
    )

    processor = omni_processor(
        Qwen2_5OmniProcessor,
        "Does this audio contain the sound events described by the text Yes No Can you hear 1 2 3 4 5 6 7 8",
    )
    tok = processor.tokenizer
    thinker = Qwen2_5OmniThinkerConfig(
        audio_config=Qwen2_5OmniAudioEncoderConfig(
            num_mel_bins=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
            n_window=100, max_source_positions=100, output_dim=64,
        ),
        vision_config=Qwen2_5OmniVisionEncoderConfig(
            depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64,
            fullatt_block_indexes=[0],
        ),
        text_config=Qwen2_5OmniTextConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1,
            # mrope_section sums to head_dim / 2
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        ),
        audio_token_index=tok.audio_token_id, image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id, audio_start_token_id=tok.audio_bos_token_id,
        audio_end_token_id=tok.audio_eos_token_id,
        vision_start_token_id=tok.vision_bos_token_id,  # not a declared field, but the rope index reads it
        vision_end_token_id=tok.vision_eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    if full:
        whole = Qwen2_5OmniForConditionalGeneration(
            Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
        )
        whole.save_pretrained(folder)
        torch.save({}, folder / "spk_dict.pt")  # released folders carry the talker's speakers; read on load
        model = whole.thinker
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration(thinker)
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.eval(), processor


def save_tiny_qwen3_omni(folder, full: bool = False):
    """A tiny Qwen3-Omni thinker (MoE text model: 4 experts, 2 per token) with its processor, built as
    ``save_tiny_qwen25_omni`` builds Qwen2.5-Omni's; ``full``: wrapped in the whole model, saved without
    the talker but with ``enable_audio_output`` on, as the released Instruct folder's config says."""
    import json

    from transformers import (
        Qwen3OmniMoeAudioEncoderConfig,
        Qwen3OmniMoeConfig,
        Qwen3OmniMoeForConditionalGeneration,
        Qwen3OmniMoeProcessor,
        Qwen3OmniMoeTextConfig,
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
        Qwen3OmniMoeVisionEncoderConfig,
    )

    # Qwen3-Omni answers lowercase: "yes" and "no" must be single tokens
    processor = omni_processor(
        Qwen3OmniMoeProcessor,
        "Does this audio contain the sound events described by the text yes no "
        "Can you hear 1 2 3 4 5 6 7 8 9",
    )
    tok = processor.tokenizer
    thinker = Qwen3OmniMoeThinkerConfig(
        audio_config=Qwen3OmniMoeAudioEncoderConfig(
            num_mel_bins=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128, d_model=64,
            output_dim=64, downsample_hidden_size=8, max_source_positions=100,  # n_window: the processor's 50
        ),
        vision_config=Qwen3OmniMoeVisionEncoderConfig(
            depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=64,
            num_position_embeddings=16, deepstack_visual_indexes=[0],
        ),
        text_config=Qwen3OmniMoeTextConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, moe_intermediate_size=32, num_experts=4,
            num_experts_per_tok=2,
            # mrope_section sums to head_dim / 2
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},
        ),
        audio_token_id=tok.audio_token_id, image_token_id=tok.image_token_id,
        video_token_id=tok.video_token_id, audio_start_token_id=tok.audio_bos_token_id,
        vision_start_token_id=tok.vision_bos_token_id,  # not a declared field, but the rope index reads it
    )  # fmt: skip
    torch.manual_seed(0)
    if full:
        whole = Qwen3OmniMoeForConditionalGeneration(
            Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
        )
        whole.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "enable_audio_output": True}))
        model = whole.thinker
    else:
        model = Qwen3OmniMoeThinkerForConditionalGeneration(thinker)
        model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model.eval(), processor


def direct_probs(model, processor, audio: np.ndarray, question: str, tokens) -> np.ndarray:
    """One question, one clip, no padding: the reference first-token probabilities of ``tokens``."""
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio_url": "x"}, {"type": "text", "text": question}]}
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], audio=[audio], sampling_rate=16_000, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**inputs).logits[0, -1].float(), -1)
    return probs[processor.tokenizer.convert_tokens_to_ids(list(tokens))].numpy()


def direct_yes_score(model, processor, audio: np.ndarray, question: str, answers=("Yes", "No")) -> float:
    yes, no = direct_probs(model, processor, audio, question, answers)
    return float(yes / (yes + no))


def direct_quality(model, processor, audio: np.ndarray, question: str) -> float:
    p = direct_probs(model, processor, audio, question, [str(r) for r in range(1, 10)])
    return float(p @ np.arange(1, 10) / p.sum())


def test_batched_scores_equal_direct_unbatched_calls(tiny):
    folder, model, processor = tiny
    scorer = get_scorer(f"judge:hf,model={folder},batch_size=2,question_batch=3")
    rng = np.random.default_rng(0)
    prompts = [
        Prompt(
            "a",
            "a dog barks, then rain",
            "accuracy",
            {"event_list": ["a dog barking", "rain"], "event_relation": "sequence"},
        ),
        Prompt("b", "rain falls on a roof"),
        Prompt(
            "c",
            "a bell rings twice and an engine idles",
            "accuracy",
            {"event_list": ["a bell", "an engine", "wind"], "event_relation": "parallelism"},
        ),
    ]
    audio = [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (1.5, 3, 2.2)]
    results = scorer.score([Clip(a[None], 16_000, p) for a, p in zip(audio, prompts)])
    t = scorer.question_templates
    for a, p, r in zip(audio, prompts, results):
        assert r.values["aqa"] == pytest.approx(
            direct_yes_score(model, processor, a, t.aqa.format(caption=p.text)), abs=1e-5
        )
        events = p.attributes.get("event_list")
        assert r.values["quality"] == pytest.approx(direct_quality(model, processor, a, t.quality), abs=1e-5)
        if events:
            expected = np.mean(
                [direct_yes_score(model, processor, a, t.event.format(event=e)) for e in events]
            )
            assert r.values["events"] == pytest.approx(expected, abs=1e-5)
        else:
            assert (
                math.isnan(r.values["events"])
                and r.not_applicable["events"] == "the prompt has no event_list"
            )
    a_seq = direct_yes_score(model, processor, audio[0], t.sequence.format(events="a dog barking, then rain"))
    assert results[0].values["relation"] == pytest.approx(a_seq, abs=1e-5)
    c_par = direct_yes_score(
        model, processor, audio[2], t.parallel.format(events="a bell and an engine and wind")
    )
    assert results[2].values["relation"] == pytest.approx(c_par, abs=1e-5)
    assert (
        math.isnan(results[1].values["relation"])
        and "no sequence or parallelism" in results[1].not_applicable["relation"]
    )
    assert not results[1].failed  # aqa is there: the clip is scored, only events is missing
    # total: the weighted mean of what applies, quality mapped from 1-9 to 0-1
    r0, r1 = results[0].values, results[1].values
    q0, q1 = (r0["quality"] - 1) / 8, (r1["quality"] - 1) / 8
    assert r0["total"] == pytest.approx((r0["aqa"] + r0["events"] + r0["relation"] + q0) / 4, abs=1e-9)
    assert r1["total"] == pytest.approx((r1["aqa"] + q1) / 2, abs=1e-9) and "total" not in results[1].errors
    assert scorer.id.startswith("judge:hf@2,") and "templates=" in scorer.id and str(folder) not in scorer.id


def test_answer_tokens_must_be_single_tokens(tiny, tmp_path):
    folder, _, _ = tiny
    (tmp_path / "t.json").write_text('{"yes": ["Absolutely"]}')  # not in the tokenizer's corpus
    with pytest.raises(ValueError, match=r"'Absolutely' is \d+ tokens .*not one"):
        get_scorer(f"judge:hf,model={folder},templates={tmp_path / 't.json'}")
    with pytest.raises(FileNotFoundError, match="set model=DIR"):
        get_scorer("judge:hf")


def test_weights_choose_the_questions_and_templates_are_versioned_data(tiny, tmp_path):
    folder, model, processor = tiny
    clip = Clip(np.zeros((1, 16_000), np.float32) + 0.01, 16_000, Prompt("a", "a bell rings"))
    only_aqa = get_scorer(f"judge:hf,model={folder},w_events=0,w_relation=0,w_quality=0")
    assert [q.metric for q in only_aqa.questions(clip)] == ["aqa"]
    (r,) = only_aqa.score([clip])
    assert r.values["total"] == r.values["aqa"] and "not asked" in r.not_applicable["quality"]

    custom = tmp_path / "templates.json"
    custom.write_text('{"aqa": "Is this {caption}? Answer yes or no.", "yes": ["yes"], "no": ["no"]}')
    edited = get_scorer(f"judge:hf,model={folder},templates={custom},w_events=0,w_relation=0,w_quality=0")
    assert edited.id != only_aqa.id and str(custom) not in edited.id
    (e,) = edited.score([clip])
    yes, no = direct_probs(
        model, processor, clip.audio[0], "Is this a bell rings? Answer yes or no.", ("yes", "no")
    )
    assert e.values["aqa"] == pytest.approx(yes / (yes + no), abs=1e-5)
    custom.write_text('{"answer": "x"}')
    with pytest.raises(ValueError, match="unknown keys"):
        get_scorer(f"judge:hf,model={folder},templates={custom}")


@pytest.mark.parametrize("full", [False, True], ids=["thinker-folder", "omni-folder"])
def test_qwen25_omni_thinker_batched_equals_direct(tmp_path, full):
    reference_package("torchvision")  # Qwen2.5-Omni's processor holds the Qwen2-VL video processor
    model, processor = save_tiny_qwen25_omni(tmp_path, full=full)
    scorer = get_scorer(f"judge:hf,model={tmp_path},batch_size=3,question_batch=4,w_events=0")
    assert scorer.family == "qwen2.5-omni"
    rng = np.random.default_rng(1)
    audio = [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (1.5, 3, 2.2)]
    texts = ["a dog barks", "a bell rings twice and an engine idles", "rain"]
    results = scorer.score(
        [Clip(a[None], 16_000, Prompt(str(i), t)) for i, (a, t) in enumerate(zip(audio, texts))]
    )
    t = scorer.question_templates
    for a, text, r in zip(audio, texts, results):
        assert r.values["aqa"] == pytest.approx(
            direct_yes_score(model, processor, a, t.aqa.format(caption=text)), abs=1e-5
        )
        assert r.values["quality"] == pytest.approx(direct_quality(model, processor, a, t.quality), abs=1e-5)


@pytest.mark.parametrize("full", [False, True], ids=["thinker-folder", "omni-folder"])
def test_qwen3_omni_thinker_batched_equals_direct(tmp_path, full):
    reference_package("torchvision")  # Qwen3-Omni's processor holds the Qwen2-VL video processor
    model, processor = save_tiny_qwen3_omni(tmp_path, full=full)
    scorer = get_scorer(f"judge:hf,model={tmp_path},batch_size=3,question_batch=4,w_events=0")
    assert scorer.family == "qwen3-omni" and scorer.answer_tokens[:2] == ("yes", "no")
    rng = np.random.default_rng(1)
    # the last is longer than the 4 s window, which Qwen3-Omni's processor would not cut: the judge does
    audio = [(0.1 * rng.standard_normal(int(16_000 * s))).astype(np.float32) for s in (1.5, 3, 5.2)]
    texts = ["a dog barks", "a bell rings twice and an engine idles", "rain"]
    results = scorer.score(
        [Clip(a[None], 16_000, Prompt(str(i), t)) for i, (a, t) in enumerate(zip(audio, texts))]
    )
    t = scorer.question_templates
    for a, text, r in zip(audio, texts, results):
        heard = a[:64_000]
        aqa = direct_yes_score(model, processor, heard, t.aqa.format(caption=text), answers=("yes", "no"))
        assert r.values["aqa"] == pytest.approx(aqa, abs=1e-5)
        quality = direct_quality(model, processor, heard, t.quality)
        assert r.values["quality"] == pytest.approx(quality, abs=1e-5)
    assert scorer._context[1] == 52  # 400 frames: 4 chunks of 100, 13 audio tokens each
    with pytest.raises(ValueError, match="qwen3-omni has none"):
        get_scorer(f"judge:hf,model={tmp_path},layout=official")


def test_odd_but_valid_audio_is_scored(tiny):
    """Issue 10: tiny, 8-channel, 192 kHz, 10-minute, silent, clipped clips all end as finite scores."""
    folder, _, _ = tiny
    scorer = get_scorer(f"judge:hf,model={folder},batch_size=4")
    prompt = Prompt(
        "a",
        "a dog barks, then rain",
        "accuracy",
        {"event_list": ["a dog barking", "rain"], "event_relation": "sequence"},
    )
    clips = odd_but_valid_clips(prompt)
    assert_all_scored(clips, score_as_the_runner_does(scorer, clips.values()))
