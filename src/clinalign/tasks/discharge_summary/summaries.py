"""Summaries rendered from a note's key facts: the reference summary, and the perturbed summaries
DPO is trained to reject, each failing the rubric (scoring.py) in one way a clinician would catch."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from clinalign.tasks.discharge_summary.schema import DischargeRecord, Fact
from clinalign.tasks.discharge_summary.scoring import (
    Dose,
    canonical,
    clauses,
    mentions,
    normalize,
    parse_dose,
    record_vocab,
)
from clinalign.tasks.discharge_summary.vocab import DIAGNOSES, MEDS
from clinalign.tasks.text import pick


def join_phrases(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_summary(rng: random.Random, age: int, sex: str, facts: Sequence[Fact]) -> str:
    """A 2-5 sentence summary naming every given fact verbatim, in one of a few clinical styles."""
    dx = [f.text for f in facts if f.kind == "diagnosis"]
    findings = [f.text for f in facts if f.kind == "finding"]
    procs = [f.text for f in facts if f.kind == "procedure"]
    meds = [f.text for f in facts if f.kind == "medication"]
    fu = [f.text for f in facts if f.kind == "follow_up"]
    lead = f"{age}-year-old {sex} admitted for {join_phrases(dx)}" if dx else f"{age}-year-old {sex} hospitalized"
    inline = findings and not any(" with " in f for f in findings) and rng.random() < 0.5
    out = [lead + (f" with {join_phrases(findings)}." if inline else ".")]
    if findings and not inline:
        out.append(pick(rng, ("Notable for {}.", "Key finding: {}.")).format(join_phrases(findings)))
    if procs:
        out.append(pick(rng, ("Underwent {}.", "Procedures: {}.")).format(join_phrases(procs)))
    if meds:
        out.append(pick(rng, ("Discharged on {}.", "Discharge medications: {}.")).format(", ".join(meds)))
    if fu:
        out.append(pick(rng, ("Follow-up: {}.", "Follow-up plan: {}.")).format(join_phrases(fu)))
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------
# Rejected summaries


def _age_sex(r: DischargeRecord) -> tuple[int, str]:
    m = re.search(r"(\d+)-year-old (man|woman)", r.summary) or re.search(r"(\d+)-year-old (man|woman)", r.note)
    return (int(m.group(1)), m.group(2)) if m else (60, "patient")


def omit_fact(r: DischargeRecord, rng: random.Random) -> str:
    """The summary re-rendered without one key fact (never the diagnosis, which anchors it)."""
    candidates = [i for i, f in enumerate(r.facts) if f.kind != "diagnosis"]
    if not candidates:
        return r.summary
    drop = pick(rng, candidates)
    return render_summary(rng, *_age_sex(r), [f for i, f in enumerate(r.facts) if i != drop])


def _wrong_amount(med: str, dose: str, stated: Sequence[Dose], rng: random.Random) -> str:
    """Another usual dose of the same drug with an amount the note never gives it, else a 2x / 10x slip."""
    taken = {d.amount for d in stated} | {parse_dose(dose).amount}
    others = [d for d in MEDS[med][0] if parse_dose(d).amount not in taken] if med in MEDS else []
    if others:
        return pick(rng, others)
    m = re.match(r"(\d+(?:\.\d+)?)(.*)", dose)
    if not m:
        return "10 mg daily"
    return f"{float(m.group(1)) * pick(rng, (2, 10)):g}{m.group(2)}"


def wrong_dose(r: DischargeRecord, rng: random.Random) -> str:
    """One discharge medication at a plausible wrong dose."""
    meds = [i for i, f in enumerate(r.facts) if f.kind == "medication" and f.name and f.dose]
    if not meds:
        return invented_fact(r, rng)
    i = pick(rng, meds)
    f = r.facts[i]
    assert f.name and f.dose
    name = canonical(f.name, record_vocab(r))
    stated = [m.dose for m in mentions(clauses(r.note), record_vocab(r)) if m.canonical == name and m.dose]
    bad = _wrong_amount(f.name, f.dose, stated, rng)
    facts = list(r.facts)
    facts[i] = f.model_copy(update={"text": f"{f.name} {bad}", "dose": bad})
    return render_summary(rng, *_age_sex(r), facts)


def invented_fact(r: DischargeRecord, rng: random.Random) -> str:
    """The summary plus a medication or diagnosis the note does not contain."""
    note = " " + " ".join(clauses(r.note)) + " "
    present = {m.canonical for m in mentions(clauses(r.note), record_vocab(r))}

    def absent(term: str, aliases: Sequence[str] = ()) -> bool:
        forms = [normalize(t) for t in (term, *aliases)]
        return forms[0] not in present and not any(f" {f} " in note for f in forms)

    if rng.random() < 0.5:
        drug = pick(rng, [m for m in sorted(MEDS) if absent(m, MEDS[m][1])])
        fact = Fact(kind="medication", text=f"{drug} {pick(rng, MEDS[drug][0])}", name=drug)
        return render_summary(rng, *_age_sex(r), [*r.facts, fact])
    dx = pick(rng, [d for d in ("acute kidney injury", "hyperkalemia", "delirium", "deep vein thrombosis",
                                "atrial fibrillation", "pneumonia", "myocardial infarction", "anemia")
                    if absent(d, DIAGNOSES.get(d, ()))])
    sentence = pick(rng, ("Course complicated by {}.", "Also treated for {}.", "New diagnosis of {}."))
    sentences = render_summary(rng, *_age_sex(r), r.facts).split(". ")
    sentences.insert(1, sentence.format(dx)[:-1])
    return ". ".join(sentences)
