"""The data audit on crafted files: each planted problem is reported by id; PHI is never echoed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinalign.cli import run as cli
from clinalign.data import audit as A
from clinalign.errors import ClinalignError
from clinalign.tasks import get_task

UTI = get_task("uti_classification")
NOTES = [
    "Nursing note: 71 year old woman with dysuria, frequency and suprapubic tenderness. UA positive nitrites.",
    "ED note: 34 year old man with right ankle sprain after a fall while running, no urinary complaints.",
    "Discharge excerpt: pneumonia treated with ceftriaxone and azithromycin, afebrile for 48 hours now.",
    "Portal message: my knee hurts after gardening all weekend, should I use ice or heat on it tonight?",
    "Clinic note: routine diabetes follow up, A1c 7.2 percent, no new complaints, feet examined today.",
]


def rec(i: str, text: str, label: str = "no"):
    return UTI.record_type(id=i, text=text, label=label)


def test_exact_and_near_duplicates_by_id():
    records = [rec(f"r{i}", t) for i, t in enumerate(NOTES)]
    records.append(rec("dup-exact", NOTES[1].upper() + "  "))  # same after normalisation
    records.append(rec("dup-near", NOTES[2].replace("48 hours", "48 hrs")))
    d = A.duplicates(UTI, records)
    assert d["exact"] == [["r1", "dup-exact"]]
    assert d["near"] == [["dup-near", "r2"]]


def test_leakage_lists_test_ids():
    train = [rec(f"t{i}", t) for i, t in enumerate(NOTES[:4])]
    test = [rec("leak", NOTES[3]), rec("clean", NOTES[4]), rec("near", NOTES[0].replace("71", "72"))]
    leaks = A.leakage(UTI, train, test)
    assert [(x["test_id"], x["train_id"], x["kind"]) for x in leaks] == [
        ("leak", "t3", "exact"), ("near", "t0", "near")]


def test_lab_panels_compare_values_not_words():
    """Two panels share most words but are different patients; the same values in another layout
    are the same case."""
    hypo = get_task("hyponatremia_urine")
    base = dict(serum_sodium=117, serum_osmolality=249, urine_osmolality=66, urine_sodium=25,
                volume_status="euvolemic", label="low_solute_or_polydipsia")
    other = dict(base, serum_sodium=120)  # one value apart: another patient
    train = [hypo.record_type(id="train-1", **base)]
    # an id whose prompt has the train record's layout: the texts are near-duplicates by MinHash
    same_layout = next(f"x{i}" for i in range(500)
                       if hypo.prompt(hypo.record_type(id=f"x{i}", **base)) == hypo.prompt(train[0]))
    copy_id = next(f"c{i}" for i in range(500)
                   if hypo.prompt(hypo.record_type(id=f"c{i}", **base)) != hypo.prompt(train[0]))
    near = hypo.record_type(id=same_layout, **other)
    assert A._minhash(hypo.prompt(near)).jaccard(A._minhash(hypo.prompt(train[0]))) >= A.NEAR_DUP_THRESHOLD
    test = [near, hypo.record_type(id=copy_id, **base)]
    assert A.leakage(hypo, train, test) == [{"test_id": copy_id, "train_id": "train-1", "kind": "exact"}]
    assert A.duplicates(hypo, train + test) == {"exact": [["train-1", copy_id]], "near": []}


def test_pair_checks():
    pairs = [
        {"id": "p1", "prompt": "q1", "chosen": "yes", "rejected": "yes"},
        {"id": "p2", "prompt": "q2", "chosen": "the full careful answer here", "rejected": ""},
        {"id": "p3", "prompt": "q3", "chosen": "A", "rejected": "B", "strategy": "wrong_label"},
        {"id": "p4", "prompt": "q3", "chosen": "B", "rejected": "A", "strategy": "wrong_label"},
    ]
    c = A.pair_checks(pairs)
    assert c["chosen_equals_rejected"] == ["p1"]
    assert c["trivially_distinguishable"] == ["p2"]
    assert c["rejected_is_chosen_elsewhere"] == ["p3", "p4"]
    assert c["strategy_share"] == {"unknown": 0.5, "wrong_label": 0.5}


SECRETS = ["Mr. Jonathan Whitfield", "MRN: 48213377", "(617) 555-0142", "jwhit@example.org",
           "42 Maple Grove Street", "DOB: 03/14/1958"]


def test_phi_scan_counts_without_text(tmp_path: Path, capsys):
    records = [rec(f"r{i}", t) for i, t in enumerate(NOTES)]
    records.append(rec("phi-1", f"Seen today: {SECRETS[0]}, {SECRETS[1]}, call {SECRETS[2]}."))
    records.append(rec("phi-2", f"Email {SECRETS[3]}; lives at {SECRETS[4]}; {SECRETS[5]}."))
    found = A.phi_scan(UTI, records)
    assert set(found) == {"name_after_title", "mrn", "phone", "email", "street_address", "date_of_birth"}
    assert found["email"]["example_ids"] == ["phi-2"] and found["mrn"]["example_ids"] == ["phi-1"]
    assert not any(found[k]["example_ids"][0].startswith("r") for k in found)  # clean notes not flagged

    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps(r.model_dump()) + "\n" for r in records))
    code = cli(["data", "audit", "uti_classification", str(path), "--out", str(tmp_path / "audit.json")])
    printed = capsys.readouterr()
    assert code == 0
    assert "email: 1 match(es) in 1 record(s), e.g. ids phi-2" in printed.out
    saved = (tmp_path / "audit.json").read_text() + (tmp_path / "audit.html").read_text()
    for secret in SECRETS:
        for piece in (secret, secret.split()[-1]):
            assert piece not in printed.out + printed.err
            assert piece not in saved


def test_audit_cli_against_and_pairs(tmp_path: Path, capsys):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    pairs = tmp_path / "pairs.jsonl"
    train.write_text("".join(json.dumps(rec(f"t{i}", t).model_dump()) + "\n" for i, t in enumerate(NOTES)))
    test.write_text(json.dumps(rec("x9", NOTES[2]).model_dump()) + "\n")
    pairs.write_text(json.dumps({"id": "same", "prompt": "p", "chosen": "no", "rejected": "no"}) + "\n")
    code = cli(["data", "audit", "uti_classification", str(train), "--against", str(test), "--pairs", str(pairs)])
    out = capsys.readouterr().out
    assert code == 0
    assert "train/test leakage: 1 (x9~t2)" in out
    assert "chosen==rejected 1 (same)" in out


def test_study_gate_stops_on_leakage(tmp_path: Path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(json.dumps(rec("a", NOTES[0]).model_dump()) + "\n")
    test.write_text(json.dumps(rec("b", NOTES[0]).model_dump()) + "\n")
    with pytest.raises(ClinalignError, match="1 test record"):
        A.check_leakage(UTI, train, test, allow=False, log=print)
    warnings = []
    A.check_leakage(UTI, train, test, allow=True, log=warnings.append)
    assert "allow_leakage" in warnings[0]


def test_phi_scan_finds_formatted_ssns_but_not_dates_phones_or_lab_values():
    hits = ["SSN 123-45-6789 on file", "social security number: 078 05 1120", "ssn#219099999"]
    misses = ["admitted 2023-01-15, follow up 2023-02-01", "call 617-555-0142 or 555-867-5309",
              "ref range 135-145 mmol/L, INR 2.0-3.0", "invalid areas 000-12-3456, 666-12-3456, 900-12-3456",
              "group or serial zero: 123-00-4567, 123-45-0000", "ICD-10 E87-1, lot 12-34-567"]
    records = [rec(f"hit{i}", f"Registration note: {t}. Dysuria.") for i, t in enumerate(hits)]
    records += [rec(f"miss{i}", f"Clinic note: {t}. Dysuria.") for i, t in enumerate(misses)]
    found = A.phi_scan(UTI, records, max_ids=10)
    assert found["ssn"] == {"matches": 3, "records": 3, "example_ids": ["hit0", "hit1", "hit2"]}
