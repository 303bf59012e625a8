"""Vendor upload files: every format round-trips (write, read back, validate against the vendor's
rules); rows that break a rule are reported FILE:LINE: field, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinalign.cli import run as cli
from clinalign.export.pairs import FORMATS
from clinalign.export.vendor import VERTEX_MAX_TOKENS

SYSTEM = {"role": "system", "content": "Be brief."}
PAIRS = [
    {"prompt": "Does this note describe a UTI? Dysuria, nitrites.", "chosen": "yes", "rejected": "no"},
    {"prompt": [SYSTEM, {"role": "user", "content": "Triage: chest pain"}],
     "chosen": "personnel: physician\nurgency: emergent", "rejected": "personnel: front_desk\nurgency: routine"},
]
SFT = [{"prompt": "q", "completion": "a"}, {"prompt": [SYSTEM, {"role": "user", "content": "q2"}], "completion": "a2"}]
VENDOR = [f for f, spec in FORMATS.items() if spec.schema is not None]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", VENDOR)
def test_round_trip_every_vendor_format(fmt: str, tmp_path: Path, capsys):
    src = _write(tmp_path / "in.jsonl", SFT if fmt.endswith("-sft") else PAIRS)
    out = tmp_path / "out.jsonl"
    assert cli(["export", "pairs", str(src), "--format", fmt, "--out", str(out)]) == 0
    assert len(_read(out)) == 2
    assert cli(["export", "validate", str(out), "--format", fmt]) == 0
    assert "2 rows valid" in " ".join(capsys.readouterr().err.split())


def test_vertex_preference_shape(tmp_path: Path):
    out = tmp_path / "v.jsonl"
    assert cli(["export", "pairs", str(_write(tmp_path / "p.jsonl", PAIRS)), "--format", "vertex-gemini-preference",
                "--out", str(out)]) == 0
    plain, chat = _read(out)
    assert plain == {
        "contents": [{"role": "user", "parts": [{"text": PAIRS[0]["prompt"]}]}],
        "completions": [{"score": 1, "completion": {"role": "model", "parts": [{"text": "yes"}]}},
                        {"score": 0, "completion": {"role": "model", "parts": [{"text": "no"}]}}],
    }
    assert chat["system_instruction"] == {"parts": [{"text": "Be brief."}]}
    assert chat["contents"] == [{"role": "user", "parts": [{"text": "Triage: chest pain"}]}]


def test_vertex_sft_and_azure_shapes(tmp_path: Path):
    src = _write(tmp_path / "s.jsonl", SFT)
    out = tmp_path / "v.jsonl"
    assert cli(["export", "pairs", str(src), "--format", "vertex-gemini-sft", "--out", str(out)]) == 0
    assert _read(out)[1] == {"systemInstruction": {"parts": [{"text": "Be brief."}]},
                             "contents": [{"role": "user", "parts": [{"text": "q2"}]},
                                          {"role": "model", "parts": [{"text": "a2"}]}]}
    # Azure OpenAI takes OpenAI's records unchanged: the twins write identical files
    for kind, rows in (("sft", SFT), ("dpo", PAIRS)):
        src = _write(tmp_path / f"{kind}.jsonl", rows)
        a, o = tmp_path / f"azure-{kind}.jsonl", tmp_path / f"openai-{kind}.jsonl"
        assert cli(["export", "pairs", str(src), "--format", f"azure-openai-{kind}", "--out", str(a)]) == 0
        assert cli(["export", "pairs", str(src), "--format", f"openai-{kind}", "--out", str(o)]) == 0
        assert a.read_bytes() == o.read_bytes()
    assert _read(a)[1]["input"]["messages"][0] == SYSTEM


@pytest.mark.parametrize("fmt,row,problem", [
    ("vertex-gemini-preference",
     {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "x", "rejected": "y"},
     "contents: Value error, must end with a user turn"),
    ("vertex-gemini-preference",
     {"prompt": [{"role": "tool", "content": "q"}, {"role": "user", "content": "q"}], "chosen": "x", "rejected": "y"},
     "contents.0.role: Input should be 'user' or 'model'"),
    ("vertex-gemini-preference", {"prompt": "x" * (4 * VERTEX_MAX_TOKENS), "chosen": "yes", "rejected": "no"},
     "record: Value error, about 131,073 tokens"),
    ("azure-openai-dpo", {"prompt": "q", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"},
     "preferred_output.0.role: Input should be 'assistant' or 'tool'"),
    ("azure-openai-dpo", {"prompt": "q", "chosen": [{"role": "tool", "content": "x"}], "rejected": "y"},
     "preferred_output: Value error, needs at least one assistant message"),
    ("azure-openai-dpo", {"prompt": "q", "chosen": "same", "rejected": "same"},
     "record: Value error, preferred_output and non_preferred_output are identical"),
    ("azure-openai-sft", {"prompt": [{"role": "robot", "content": "q"}], "completion": "a"},
     "messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'"),
    ("vertex-gemini-sft", {"prompt": [SYSTEM], "completion": "a"}, "contents: Value error, must start with a user turn"),
])
def test_bad_rows_rejected_with_line_numbers(fmt: str, row: dict, problem: str, tmp_path: Path, capsys):
    good = SFT[0] if fmt.endswith("-sft") else PAIRS[0]
    src = _write(tmp_path / "in.jsonl", [good, row])
    out = tmp_path / "out.jsonl"
    assert cli(["export", "pairs", str(src), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: {problem}" in err, err
    assert not out.exists()


@pytest.mark.parametrize("fmt,record,problem", [
    ("vertex-gemini-preference",
     {"contents": [{"role": "user", "parts": [{"text": "q"}]}],
      "completions": [{"score": 1, "completion": {"role": "model", "parts": [{"text": "a"}]}},
                      {"score": 1, "completion": {"role": "model", "parts": [{"text": "b"}]}}]},
     "completions: Value error, needs one preferred (score 1) and one dispreferred (score 0) completion"),
    ("vertex-gemini-preference",
     {"contents": [{"role": "user", "parts": [{"text": "q"}]}],
      "completions": [{"score": 1, "completion": {"role": "model", "parts": [{"text": "a"}]}}]},
     "completions: List should have at least 2 items"),
    ("vertex-gemini-preference",
     {"contents": [{"role": "user", "parts": [{"text": "q"}]}],
      "completions": [{"score": True, "completion": {"role": "model", "parts": [{"text": "a"}]}},
                      {"score": 0, "completion": {"role": "model", "parts": [{"text": "b"}]}}]},
     "completions.0.score: Input should be a valid integer"),
    ("azure-openai-dpo",
     {"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}],
      "third_output": [{"role": "assistant", "content": "c"}]},
     "third_output: Extra inputs are not permitted"),
    ("azure-openai-dpo",
     {"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}]},
     "non_preferred_output: missing field"),
    ("azure-openai-sft", {"messages": [{"role": "user", "content": "q", "weight": 0}, {"role": "assistant", "content": "a"}]},
     "messages.0: Value error, weight is only allowed on assistant messages"),
    ("azure-openai-sft", {"messages": [{"role": "user", "content": "q"}]},
     "messages: Value error, needs at least one assistant message"),
])
def test_validate_hand_written_files(fmt: str, record: dict, problem: str, tmp_path: Path, capsys):
    path = _write(tmp_path / "upload.jsonl", [record])
    assert cli(["export", "validate", str(path), "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1: {problem}" in err, err


def test_validate_needs_a_vendor_format(tmp_path: Path, capsys):
    path = _write(tmp_path / "p.jsonl", PAIRS)
    assert cli(["export", "validate", str(path), "--format", "jsonl"]) == 2
    assert "no vendor rules" in capsys.readouterr().err
