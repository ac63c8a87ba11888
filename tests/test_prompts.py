"""Prompt suites: the real TTA-Bench and AudioCaps files, plain text, and malformed input."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttaeval.io.prompts import Prompt, PromptError, load_prompts


def test_tta_bench_folder_loads_all_2999_prompts_with_dimensions(shared_data):
    prompts = load_prompts(shared_data / "tta-bench")
    assert len(prompts) == 2999
    dims = Counter(p.dimension for p in prompts)
    assert dims == {
        "accuracy": 1500,
        "generalization": 300,
        "robustness": 300,
        "fairness": 299,
        "bias": 300,
        "toxicity": 300,
    }
    assert prompts[0].id == "prompt_0001"
    assert len({p.id for p in prompts}) == 2999


def test_tta_bench_attributes_are_kept_as_they_are(shared_data):
    by_id = {p.id: p for p in load_prompts(shared_data / "tta-bench")}
    first = by_id["prompt_0001"]
    assert first.text == "A railroad crossing rings while a train approaches and blows a horn"
    assert first.attributes["event_count"] == 3
    assert first.attributes["event_list"] == [
        "Railroad crossing ringing",
        "Train approaching",
        "Train blowing horn",
    ]
    assert first.attributes["event_relation"] == "parallelism"
    robust = by_id["prompt_1801"]
    assert robust.attributes["perturbation_type"] == "uppercase"
    assert robust.attributes["notes"] == "8"
    toxic = by_id["prompt_2701"]
    assert toxic.dimension == "toxicity"  # no "Dimensions of evaluation" field: from the file name
    assert toxic.attributes["categories"] == ["hate"]


def test_single_tta_bench_file(shared_data):
    prompts = load_prompts(shared_data / "tta-bench" / "robustness_prompt.json")
    assert len(prompts) == 300
    assert {p.dimension for p in prompts} == {"robustness"}


def test_audiocaps_jsonl(shared_data):
    prompts = load_prompts(shared_data / "audiocaps" / "test_metadata.jsonl")
    assert len(prompts) == 957
    assert prompts[0].id == "Y--0w1YA1Hm4"
    assert prompts[0].text == "People talking with the dull roar of a vehicle on the road"


def test_plain_text_one_prompt_a_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a dog barks\n\n  rain on a roof  \n")
    prompts = load_prompts(path)
    assert [(p.id, p.text) for p in prompts] == [
        ("line_0001", "a dog barks"),
        ("line_0003", "rain on a roof"),
    ]


def _write_json(tmp_path, data, name="x.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "data, message",
    [
        ({"id": "a"}, "expected a JSON list"),
        ([{"prompt_text": "x"}], r"entry 0: missing field 'id'"),
        (
            [{"id": "p1", "prompt_text": "x"}, {"id": "p2"}],
            r"entry 1 \(id 'p2'\): missing field 'prompt_text'",
        ),
        ([{"id": "p1", "prompt_text": "   "}], r"entry 0 \(id 'p1'\): field 'prompt_text' is empty"),
        ([{"id": "p1", "prompt_text": 3}], "must be a string"),
        ([{"id": "p1", "prompt_text": "a"}, {"id": "p1", "prompt_text": "b"}], "duplicate prompt id 'p1'"),
        ([], "no prompts"),
    ],
)
def test_malformed_tta_bench_json_names_the_fault(tmp_path, data, message):
    with pytest.raises(PromptError, match=message):
        load_prompts(_write_json(tmp_path, data))


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"id": "a", "prompt_text": "x"},\n {"id": "b" "prompt_text": "y"}\n]')
    with pytest.raises(PromptError, match=r"bad\.json: invalid JSON at line 3"):
        load_prompts(path)


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "caps.jsonl"
    path.write_text('{"prompt": "a", "audio_id": "x"}\n{"prompt": "b", "audio_id": "y"\n')
    with pytest.raises(PromptError, match=r"caps\.jsonl: line 2: invalid JSON"):
        load_prompts(path)
    path.write_text('{"prompt": "a", "audio_id": "x"}\n{"audio_id": "y"}\n')
    with pytest.raises(PromptError, match=r"line 2: missing field 'prompt'"):
        load_prompts(path)


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "p.csv").write_text("a,b")
    with pytest.raises(PromptError, match="unknown prompt format"):
        load_prompts(tmp_path / "p.csv")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "nope.json")


def test_content_key_ignores_id_but_not_text_or_attributes():
    a = Prompt("p1", "a dog barks", "accuracy", {"event_list": ["dog"]})
    assert a.content_key == Prompt("p9", "a dog barks", "accuracy", {"event_list": ["dog"]}).content_key
    assert a.content_key != Prompt("p1", "a dog growls", "accuracy", {"event_list": ["dog"]}).content_key
    assert a.content_key != Prompt("p1", "a dog barks", "accuracy", {"event_list": ["cat"]}).content_key


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=20))
def test_text_suites_keep_every_non_blank_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("t") / "p.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    expected = [ln.strip() for ln in "\n".join(lines).splitlines() if ln.strip()]
    if not expected:
        with pytest.raises(PromptError, match="no prompts"):
            load_prompts(path)
        return
    prompts = load_prompts(path)
    assert [p.text for p in prompts] == expected
    assert len({p.id for p in prompts}) == len(prompts)
