"""judge:http against a server that validates requests strictly against the documented OpenAI/vLLM
audio chat-completions shapes (tests/openai_schema_server.py), not against ttaeval's own server."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from openai_schema_server import SchemaServer, expected_probs

from ttaeval import Clip, get_scorer
from ttaeval.judge.base import Answer, yes_score
from ttaeval.synth import render
from ttaeval.synth.scenes import Scene
from ttaeval.synth.suites import accuracy_suite

MODEL = "qwen2-audio-7b@test"


@pytest.fixture
def server():
    server = SchemaServer(MODEL)
    yield server
    server.shutdown()


def _clips() -> list[Clip]:
    return [
        Clip(render(Scene.from_dict(p.attributes["scene"])), 16_000, prompt=p) for p in accuracy_suite()[:3]
    ]


def test_every_request_passes_the_strict_schema_and_scores_follow_the_replies(server):
    judge = get_scorer(f"judge:http,url={server.url},served_model={MODEL},concurrency=2")
    clips = _clips()
    results = judge.score(clips)
    asked = [q for i, c in enumerate(clips) for q in judge.questions(c, i)]
    assert server.errors == [] and len(server.requests) == len(asked)
    assert server.connections <= 2  # kept alive: one connection per request thread, not per question
    sent = {}  # question -> the WAV bytes that came with it (libsndfile stamps float WAVs with the time)
    for body in server.requests:
        audio, text = body["messages"][0]["content"]
        sent[text["text"]] = base64.b64decode(audio["input_audio"]["data"])
    t = judge.question_templates
    for clip, result in zip(clips, results):
        question = t.aqa.format(caption=clip.prompt.text)
        assert sf.read(io.BytesIO(sent[question]), dtype="float32")[0] == pytest.approx(clip.audio[0])
        want, _ = yes_score(Answer(expected_probs(sent[question], question, judge.top_logprobs)), t.yes, t.no)
        assert result.values["aqa"] == pytest.approx(want, rel=1e-9)
        assert np.isfinite(result.values["total"])


def test_a_request_off_the_schema_is_refused_and_scores_nan_not_zero(server, monkeypatch):
    from ttaeval.judge.http import HTTPJudgeScorer

    judge = get_scorer(f"judge:http,url={server.url},served_model={MODEL},retries=0")
    plain = HTTPJudgeScorer.payload

    def flac(self, wav, question):  # a format the API does not take
        return plain(self, wav, question).replace(b'"format": "wav"', b'"format": "flac"')

    monkeypatch.setattr(HTTPJudgeScorer, "payload", flac)
    result = judge.score(_clips()[:1])[0]
    assert np.isnan(result.values["aqa"]) and "HTTP 400" in result.errors["aqa"]
    assert server.errors and "input_audio.format" in server.errors[0]
