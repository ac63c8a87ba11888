"""judge-mini: the shipped folder loads through judge:hf's code path and judges the synthetic world.

The must-show numbers (ROC-AUC, accuracies, Spearman on hundreds of held-out clips) are measured by
the recipe and written to ``metrics.json``; here a small held-out sample checks that the shipped
weights still behave that way, and a few-step run of the recipe checks that it writes a folder
``judge:hf`` loads.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from ttaeval import Clip, get_scorer
from ttaeval.judge.hf import JUDGE_MINI
from ttaeval.synth import render
from ttaeval.synth.degrade import degrade
from ttaeval.synth.scenes import Scene
from ttaeval.synth.suites import accuracy_suite
from ttaeval.synth.train_judge import JudgeMiniConfig, save, train


@pytest.fixture(scope="module")
def judge():
    return get_scorer("judge:mini")


def test_the_shipped_folder_is_small_safetensors_with_its_measured_numbers(judge):
    files = {p.name: p.stat().st_size for p in JUDGE_MINI.iterdir()}
    assert "model.safetensors" in files and not any(n.endswith((".bin", ".pt", ".pth")) for n in files)
    assert sum(files.values()) < 8e6
    recorded = json.loads((JUDGE_MINI / "metrics.json").read_text())["metrics"]
    for key in ("aqa_auc", "event_presence_accuracy", "order_accuracy", "quality_spearman", "train_seconds"):
        assert np.isfinite(recorded[key])
    assert judge.id.startswith("judge:mini@2,") and "weights=" in judge.id


def test_judge_mini_v1_is_kept_for_the_runs_trained_with_it(judge):
    """The study's judge-reward fine-tunes were trained and scored with the first judge-mini: it loads as
    judge:mini-v1, other weights than judge:mini, and the study and its recipes name it."""
    from ttaeval.judge.hf import MiniV1JudgeScorer

    v1 = get_scorer("judge:mini-v1")
    assert isinstance(v1, MiniV1JudgeScorer) and v1.id.startswith("judge:mini-v1@2,")
    assert v1.identity_options()["weights"] != judge.identity_options()["weights"]
    configs = Path(__file__).resolve().parents[1] / "resonate_train" / "configs"
    for name in ("compare_mini", "compare_mini_seen", "grpo_judge_aqa", "grpo_judge_total"):
        text = (configs / f"{name}.toml").read_text()
        assert "judge:mini-v1" in text and '"judge:mini"' not in text and '"judge:mini#' not in text


def test_judge_mini_hears_which_events_are_there_and_rates_degraded_audio_lower(judge):
    """What the shipped judge-mini does (metrics.json, 200 held-out scenes: presence accuracy 0.91,
    quality Spearman 0.93); here 24 held-out scenes and their 38 events (presence 0.95 when written)."""
    from ttaeval.judge.base import yes_score
    from ttaeval.synth.scenes import event_description
    from ttaeval.synth.suites import random_event
    from ttaeval.synth.train_judge import _other_type

    rng = np.random.default_rng(0)
    audio, present, absent = [], [], []
    for p in accuracy_suite()[:24]:
        scene = Scene.from_dict(p.attributes["scene"])
        a = render(scene)[0]
        for e in scene.events:
            audio.append(a)
            present.append(judge.question_templates.event.format(event=event_description(e)))
            other = random_event(rng, _other_type(scene, rng))
            absent.append(judge.question_templates.event.format(event=event_description(other)))
    t = judge.question_templates
    answers = judge.answer(audio + audio, present + absent, judge.answer_tokens)
    scores = np.array([yes_score(a, t.yes, t.no)[0] for a in answers])
    assert np.isfinite(scores).all()
    assert np.mean(np.r_[scores[: len(present)] > 0.5, scores[len(present) :] < 0.5]) >= 0.85

    clean = [render(Scene.from_dict(p.attributes["scene"])) for p in accuracy_suite()[:8]]
    noisy = [degrade(a, "noise", 4, 16_000, rng) for a in clean]
    quality = get_scorer("judge:mini,w_aqa=0,w_events=0,w_relation=0")
    prompt = accuracy_suite()[0]
    rate = [r.values["quality"] for r in quality.score([Clip(a, 16_000, prompt) for a in clean + noisy])]
    assert np.mean(rate[:8]) > np.mean(rate[8:]) + 2


@pytest.mark.parametrize("independent_turns", [True, False])
def test_the_recipe_writes_a_folder_judge_hf_loads(tmp_path, independent_turns):
    cfg = JudgeMiniConfig(
        scenes=12,
        degraded=12,
        steps=2,
        encoder_steps=2,
        batch_size=4,
        workers=1,
        independent_turns=independent_turns,
    )
    model, processor, losses = train(cfg, log=lambda *a, **k: None)
    assert len(losses) == 2 and all(np.isfinite(losses))
    save(model, processor, tmp_path)
    scorer = get_scorer(f"judge:hf,model={tmp_path}")
    prompt = accuracy_suite()[0]
    (result,) = scorer.score([Clip(render(Scene.from_dict(prompt.attributes["scene"])), 16_000, prompt)])
    assert all(np.isfinite(result.values[m]) for m in ("aqa", "events", "quality", "total")), result.error


def test_stage_one_aligns_the_audio_tokens_with_the_event_names_embeddings(monkeypatch):
    """align_tags trains the projector and the event names' token embeddings with the encoder; the other
    embedding rows only decay. Each parameter is in the optimiser once."""
    import torch

    from ttaeval.synth import train_judge

    cfg = JudgeMiniConfig(
        scenes=16, degraded=8, encoder_steps=3, encoder_batch=8, steps=1, batch_size=2, workers=1
    )
    seen = {}
    real = train_judge.pretrain_encoder

    def spy(model, cfg, tokenizer, *args):
        seen["before"] = model.get_input_embeddings().weight.detach().clone()
        seen["projector"] = model.model.multi_modal_projector.linear.weight.detach().clone()
        real(model, cfg, tokenizer, *args)
        seen["after"] = model.get_input_embeddings().weight.detach().clone()
        seen["projector_after"] = model.model.multi_modal_projector.linear.weight.detach().clone()
        seen["names"] = sorted({i for ids in train_judge.name_tokens(tokenizer) for i in ids})

    monkeypatch.setattr(train_judge, "pretrain_encoder", spy)
    with warnings.catch_warnings():  # each parameter once in the optimiser (AdamW steps a repeat twice)
        warnings.filterwarnings("error", message=".*duplicate parameters")
        train(cfg, log=lambda *a, **k: None)
    moved = (seen["after"] - seen["before"]).norm(dim=1)
    names = torch.zeros(len(moved), dtype=torch.bool)
    names[seen["names"]] = True
    assert len(seen["names"]) >= len(train_judge.TYPES)
    assert moved[names].min() > 10 * moved[~names].max()
    assert not torch.equal(seen["projector"], seen["projector_after"])


def test_independent_turns_train_each_question_exactly_as_the_judge_asks_it_alone():
    """A packed row (the audio prefix once, each question in its own masked segment, positions as if
    alone) gives every answer token the logits of that question asked alone, left padding included."""
    import torch

    from ttaeval.synth import train_judge as tj
    from ttaeval.synth.suites import random_scene

    cfg = JudgeMiniConfig(hidden=32, d_model=32, lm_layers=2, encoder_layers=1, vocab_size=400)
    processor = tj.build_processor(cfg)
    model = tj.build_model(cfg, processor.tokenizer).eval()
    rng = np.random.default_rng(3)
    chats = [tj.conversation(random_scene(rng), rng, cfg) for _ in range(2)]
    assert {tj.question_kind(q) for chat in chats for q, _ in chat} >= {"aqa", "events", "describe"}
    rows = tj._packed_rows(processor, chats, 50)
    assert len(rows[0][0]) != len(rows[1][0])  # so one row is left-padded
    ids, attention, positions, labels = tj._packed_batch(rows, processor.tokenizer.pad_token_id)
    features = torch.randn(2, 64, 200)
    frames = torch.ones(2, 200, dtype=torch.long)

    def answer_logits(ids, attention, positions, labels, features, frames):
        hidden = model.model(
            input_ids=ids,
            attention_mask=attention,
            input_features=features,
            feature_attention_mask=frames,
            position_ids=positions,
        ).last_hidden_state
        return model.lm_head(hidden[:, :-1][labels[:, 1:] != -100])

    with torch.no_grad():
        packed = answer_logits(ids, attention, positions, labels, features, frames)
        alone = []
        for k, chat in enumerate(chats):
            for lone_ids, lone_labels in tj._sft_rows(processor, [[qa] for qa in chat], 50):
                i, lab = torch.tensor([lone_ids]), torch.tensor([lone_labels])
                pos = torch.arange(i.shape[1])[None]
                alone.append(answer_logits(i, torch.ones_like(i), pos, lab, features[k : k + 1], frames[:1]))
    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-5)
    assert len(packed) == sum(len(processor.tokenizer(a)["input_ids"]) for chat in chats for _, a in chat)


def test_near_miss_event_questions_change_only_the_count_or_only_the_type():
    """count_negatives / matched_negatives: the "No" question beside an event names that event with
    another count, or another type with the same pitch, loudness and length (the aqa corruptions, asked
    one event at a time)."""
    from dataclasses import replace

    from ttaeval.synth import train_judge as tj
    from ttaeval.synth.events import EVENT_TYPES
    from ttaeval.synth.scenes import Event, event_description

    scene = Scene(
        (Event("bell", "low", "loud", "short", 2), Event("hum", "high", "quiet", "long")), "sequence", 1
    )
    rng = np.random.default_rng(0)
    counts = JudgeMiniConfig(count_negatives=1.0)
    asked = {tj.absent_event_question(scene, scene.events[0], rng, counts) for _ in range(20)}
    wrong_counts = [replace(scene.events[0], count=c) for c in (1, 3)]
    template = tj.TEMPLATES["qwen2-audio"].event
    assert asked == {template.format(event=event_description(e)) for e in wrong_counts}
    matched = JudgeMiniConfig(matched_negatives=1.0)
    hum = scene.events[1]
    same_but_type = {
        template.format(event=event_description(replace(hum, type=k))): k for k in EVENT_TYPES if k != "hum"
    }
    kinds = {same_but_type[tj.absent_event_question(scene, hum, rng, matched)] for _ in range(40)}
    assert len(kinds) > 3 and not kinds & {"bell", "hum"}  # never a type the scene holds


def test_the_recipe_command_line_sets_config_fields_by_their_types():
    from ttaeval.synth.train_judge import _override

    cfg = _override(_override(JudgeMiniConfig(), "independent_turns=false"), "lr=3e-3")
    assert cfg.independent_turns is False and cfg.lr == 3e-3
    assert _override(cfg, "aqa_pairs=3").aqa_pairs == 3
    for bad in ("aqa_pairs=three", "independent_turns=maybe", "no_such_field=1", "lr"):
        with pytest.raises(SystemExit, match="--set"):
            _override(cfg, bad)


def test_the_official_layout_puts_the_question_first_after_the_system_prompt():
    from ttaeval.judge.hf import SYSTEM_PROMPTS
    from ttaeval.scorers import get_scorer

    default, official = get_scorer("judge:mini"), get_scorer("judge:mini,layout=official")
    text = official.chat("Is a dog barking?")
    system = text.index(SYSTEM_PROMPTS["qwen2-audio"])
    assert system < text.index("Is a dog barking?") < text.index("<|AUDIO|>")
    plain = default.chat("Is a dog barking?")
    assert plain.index("<|AUDIO|>") < plain.index("Is a dog barking?") and "You are" not in plain
    assert "layout" not in default.id and official.id == default.id.replace("@2,", "@2,layout=official,")
    with pytest.raises(ValueError, match="layout must be one of audio-first, official"):
        get_scorer("judge:mini,layout=text-first")


def test_each_clip_is_encoded_once_for_all_of_its_questions(judge):
    """judge:hf runs the audio encoder once per clip of a scoring call, however many questions the
    clip gets and however the questions fall into batches; the answers are those of encoding every
    question's audio anew."""
    prompts = accuracy_suite()[:3]
    clips = [Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, prompt=p) for p in prompts]
    asks = [q for i, clip in enumerate(clips) for q in judge.questions(clip, i)]
    assert len(asks) >= 3 * 4  # aqa, quality and the events of each clip (relations where stated)
    before = judge.encoder_rows
    shared = judge.next_token_probs([clips[q.clip].audio[0] for q in asks], [q.text for q in asks])
    assert judge.encoder_rows - before == len(clips)
    texts = [judge.chat(q.text) for q in asks]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    anew = judge._batches([clips[q.clip].audio[0] for q in asks], texts, order, judge.question_batch)
    assert judge.encoder_rows - before == len(clips) + len(asks)  # without the cache: every row
    np.testing.assert_allclose(shared, anew, atol=1e-6)
    before = judge.encoder_rows
    judge.score(clips)
    assert judge.encoder_rows - before == len(clips)


def test_judge_mini_eval_is_another_judge_mini_that_no_fine_tune_trains_on(judge):
    """judge:mini-eval: the same recipe with another seed (other training scenes), so a study's judge
    claims can be read from a judge that was never a reward; as good on the held-out scenes."""
    from ttaeval.judge.hf import MiniEvalJudgeScorer

    independent = get_scorer("judge:mini-eval")
    assert isinstance(independent, MiniEvalJudgeScorer) and independent.id.startswith("judge:mini-eval@2,")
    assert independent.identity_options()["weights"] != judge.identity_options()["weights"]
    ours = json.loads((JUDGE_MINI.parent / "judge_mini_eval" / "metrics.json").read_text())
    shipped = json.loads((JUDGE_MINI / "metrics.json").read_text())
    assert ours["config"]["seed"] != shipped["config"]["seed"]
    assert {k: v for k, v in ours["config"].items() if k != "seed"} == {
        k: v for k, v in shipped["config"].items() if k != "seed"
    }
    assert ours["metrics"]["aqa_auc"] > 0.85 and ours["metrics"]["event_presence_accuracy"] > 0.85
    from resonate_train.dpo import DPOConfig
    from resonate_train.grpo import GRPOConfig

    study = Path(__file__).resolve().parents[1] / "resonate_train" / "configs" / "study2"
    rewards = [r for p in study.glob("grpo_*.toml") for r in GRPOConfig.from_toml(p).rewards]
    rewards += [
        DPOConfig.from_toml(p).reward
        for p in study.glob("*.toml")
        if p.name.startswith(("dpo", "sweep_l", "sweep_s"))
    ]
    assert rewards and not any("mini-eval" in r for r in rewards)  # never a reward


def test_loading_the_judge_prints_no_progress_bar_into_a_log(capfd):
    from transformers.utils import logging as hf_logging

    from ttaeval.judge.hf import load_judge_model

    assert hf_logging.is_progress_bar_enabled()
    load_judge_model(JUDGE_MINI)  # stderr is captured here: not a terminal, as in a log file
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored for whoever loads next
