"""Discharge summarisation: a discharge note -> a short summary, scored against the note's key facts.

Every record carries the key facts behind its note (diagnosis, findings, procedures, each discharge
medication with its dose, follow-up). Until clinicians rate summaries (see rate/), a deterministic
rubric, `RUBRIC`, stands in for their 1-5 Likert score; the app can show raters the same text, so
both scales mean the same thing.

How a summary is matched against the facts (`assess`), so any score can be checked by hand:

- Normalisation, applied to notes, summaries and facts alike: lower case; dashes, slashes and
  punctuation become spaces (decimals and ``%`` survive); number words become digits; plurals of
  units and time words are dropped (``weeks`` -> ``week``); common abbreviations are expanded
  (``PCP`` -> primary care, ``TTE`` -> transthoracic echocardiogram, ``EGD``, ``CXR``, ``DKA``,
  ``AFib``, ``RVR``, ``UTI``, ``DVT``, ``EF``, ``RLL``, ``CBC``, ...); dose frequencies are put in
  one form (``BID`` / ``twice a day`` -> twice daily, ``qHS`` / ``at bedtime`` -> nightly,
  ``q6h`` -> every 6 hour, ``PRN`` -> as needed).
- A diagnosis, finding, procedure or follow-up fact is *recalled* when every keyword of its text, or
  of one of its aliases, occurs in the summary as a word, in any order (keywords are the words left
  after dropping filler such as "of", "with", "clinic", "follow up"). So "pneumonia in the right
  lower lobe" recalls "right lower lobe pneumonia", and "see PCP in one week" recalls "primary care
  in 1 week".
- A medication fact is recalled when its name (or an alias, such as a brand name) is followed, in
  the same clause, by the right amount and unit (1 g = 1000 mg) and by no contradicting frequency
  (an unstated frequency is accepted).
- False facts: (a) a wrong dose: a listed medication stated with an amount or frequency that
  matches neither its discharge dose nor any dose the note gives for it; (b) an invented term: a
  medication, diagnosis or procedure from the known vocabulary (`VOCAB`, plus the record's own
  fact names) asserted in the summary while neither the words used nor the term's canonical name
  occur in the note (so "CHF" is fine when the note says heart failure). A term preceded in its
  clause by a negation ("no", "without", "negative for", "ruled out", ...) or followed by
  "prophylaxis", "prevention" or "risk" is not an assertion.
- Likert: `likert_score` applies RUBRIC to the recall, the false-fact count and the word count.

Known limits, kept on purpose so scores stay explainable: keywords may be found in different
sentences; negation is a short cue list, not a parser; false facts are only detected for terms in
the vocabulary.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from clinalign.tasks._text import pick
from clinalign.tasks.base import Metric, Prediction, Record, RejectedBuilder, Task

MAX_WORDS = 120  # a summary longer than this is not a summary (a copied note would otherwise score 5)

RUBRIC = f"""Discharge summary rubric (1-5). Start at 5 and subtract:
- omissions: 1 point if any key fact is missing (diagnosis, key finding, procedure, each discharge
  medication with its dose, follow-up); 2 if a quarter or more are missing; 3 if half or more are missing;
- 1 point for each false statement: a wrong dose for a discharge medication, or a medication,
  diagnosis or procedure that is not in the note;
- 1 point if the summary runs past {MAX_WORDS} words.
The lowest score is 1; an empty summary scores 1.
5 = every key fact and nothing false; 4 = one omission or one false statement;
3 = several omissions, or two false statements; 2 and 1 = unusable or unsafe."""


class Fact(BaseModel):
    """One key fact of a note. ``text`` is the canonical phrase; medications also give ``name`` and
    ``dose`` separately (the dose is checked, not just the words)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["diagnosis", "procedure", "medication", "follow_up", "finding"]
    text: str
    name: str | None = None
    dose: str | None = None
    aliases: list[str] = []

    @model_validator(mode="after")
    def _medication_has_name(self) -> Fact:
        if not self.text.strip():
            raise ValueError("text: empty")
        if self.kind == "medication" and not (self.name and self.name.strip()):
            raise ValueError("a medication fact needs a name (and usually a dose)")
        return self


class DischargeRecord(Record):
    note: str
    summary: str
    facts: list[Fact]

    @field_validator("note", "summary")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty text")
        return v

    @field_validator("facts")
    @classmethod
    def _some_facts(cls, v: list[Fact]) -> list[Fact]:
        if not v:
            raise ValueError("needs at least one key fact")
        return v


# ---------------------------------------------------------------------------------------------------
# Vocabulary: medications (doses, brand aliases, class), diagnoses and procedures.

#: medication -> (usual discharge doses, aliases, drug class). Classes stop the generator from giving
#: two statins or two anticoagulants; aliases are what a summary may call the drug.
MEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "furosemide": (("20 mg daily", "40 mg daily", "40 mg twice daily", "80 mg daily"), ("lasix",), "loop"),
    "torsemide": (("20 mg daily", "40 mg daily"), (), "loop"),
    "metoprolol succinate": (("25 mg daily", "50 mg daily", "100 mg daily"), ("toprol xl", "metoprolol"), "beta"),
    "metoprolol tartrate": (("25 mg twice daily", "50 mg twice daily"), ("lopressor", "metoprolol"), "beta"),
    "carvedilol": (("3.125 mg twice daily", "6.25 mg twice daily", "12.5 mg twice daily"), ("coreg",), "beta"),
    "lisinopril": (("5 mg daily", "10 mg daily", "20 mg daily"), ("zestril",), "acei"),
    "losartan": (("25 mg daily", "50 mg daily", "100 mg daily"), ("cozaar",), "acei"),
    "spironolactone": (("12.5 mg daily", "25 mg daily"), ("aldactone",), "mra"),
    "empagliflozin": (("10 mg daily",), ("jardiance",), "sglt2"),
    "amoxicillin-clavulanate": (("875 mg twice daily",), ("augmentin",), "abx"),
    "cefpodoxime": (("200 mg twice daily",), (), "abx"),
    "levofloxacin": (("750 mg daily", "500 mg daily"), ("levaquin",), "abx"),
    "azithromycin": (("250 mg daily", "500 mg daily"), ("zithromax",), "macrolide"),
    "doxycycline": (("100 mg twice daily",), (), "abx"),
    "cephalexin": (("500 mg four times daily",), ("keflex",), "abx"),
    "ciprofloxacin": (("500 mg twice daily",), ("cipro",), "abx"),
    "benzonatate": (("100 mg three times daily as needed",), ("tessalon",), "cough"),
    "prednisone": (("40 mg daily", "20 mg daily"), (), "steroid"),
    "tiotropium": (("18 mcg daily",), ("spiriva",), "lama"),
    "albuterol inhaler": (("2 puffs every 4 hours as needed", "2 puffs every 6 hours as needed"),
                          ("albuterol", "proair", "ventolin"), "saba"),
    "budesonide-formoterol": (("2 puffs twice daily",), ("symbicort",), "ics"),
    "insulin glargine": (("14 units nightly", "18 units nightly", "20 units nightly", "24 units nightly"),
                         ("lantus",), "basal"),
    "insulin lispro": (("4 units with meals", "6 units with meals", "8 units with meals"), ("humalog",), "bolus"),
    "glucagon": (("1 mg as needed",), (), "glucagon"),
    "pantoprazole": (("40 mg twice daily", "40 mg daily"), ("protonix",), "ppi"),
    "omeprazole": (("20 mg daily", "40 mg daily"), ("prilosec",), "ppi"),
    "sucralfate": (("1 g four times daily",), ("carafate",), "sucralfate"),
    "ferrous sulfate": (("325 mg daily",), ("iron sulfate",), "iron"),
    "aspirin": (("81 mg daily",), (), "antiplatelet"),
    "clopidogrel": (("75 mg daily",), ("plavix",), "p2y12"),
    "ticagrelor": (("90 mg twice daily",), ("brilinta",), "p2y12"),
    "atorvastatin": (("40 mg daily", "80 mg daily", "20 mg daily"), ("lipitor",), "statin"),
    "rosuvastatin": (("10 mg daily", "20 mg daily"), ("crestor",), "statin"),
    "nitroglycerin": (("0.4 mg sublingual as needed",), ("nitro",), "nitrate"),
    "tamsulosin": (("0.4 mg nightly",), ("flomax",), "alpha"),
    "acetaminophen": (("650 mg every 6 hours as needed", "1000 mg every 8 hours as needed"),
                      ("tylenol", "paracetamol"), "analgesic"),
    "oxycodone": (("5 mg every 6 hours as needed",), (), "opioid"),
    "ondansetron": (("4 mg every 8 hours as needed",), ("zofran",), "antiemetic"),
    "apixaban": (("5 mg twice daily", "10 mg twice daily", "2.5 mg twice daily"), ("eliquis",), "anticoag"),
    "rivaroxaban": (("15 mg twice daily", "20 mg daily"), ("xarelto",), "anticoag"),
    "diltiazem": (("120 mg daily", "180 mg daily", "240 mg daily"), ("cardizem",), "ccb_rate"),
    "amlodipine": (("5 mg daily", "10 mg daily"), ("norvasc",), "ccb"),
    "hydrochlorothiazide": (("12.5 mg daily", "25 mg daily"), ("hctz",), "thiazide"),
    "metformin": (("500 mg twice daily", "1000 mg twice daily"), ("glucophage",), "metformin"),
    "levothyroxine": (("50 mcg daily", "75 mcg daily", "100 mcg daily"), ("synthroid",), "thyroid"),
    "sertraline": (("50 mg daily", "100 mg daily"), ("zoloft",), "ssri"),
    "allopurinol": (("100 mg daily", "300 mg daily"), ("zyloprim",), "gout"),
    "pancrelipase": (("24000 units with meals",), ("creon",), "enzyme"),
    "polyethylene glycol": (("17 g daily as needed",), ("miralax",), "laxative"),
    "senna": (("8.6 mg nightly as needed", "17.2 mg nightly"), ("senokot",), "laxative"),
}
#: drugs never generated as discharge medications but recognised if a summary invents them
EXTRA_MEDS: dict[str, tuple[str, ...]] = {
    "warfarin": ("coumadin",), "digoxin": (), "amiodarone": (), "gabapentin": ("neurontin",),
    "hydralazine": (), "enoxaparin": ("lovenox",), "heparin": (), "vancomycin": (), "ceftriaxone": (),
    "piperacillin-tazobactam": ("zosyn",), "methylprednisolone": (), "insulin aspart": ("novolog",),
    "potassium chloride": (), "lorazepam": ("ativan",), "tramadol": (), "clonidine": (),
    "nitrofurantoin": ("macrobid",), "sitagliptin": ("januvia",), "ibuprofen": ("motrin", "advil"),
}
#: diagnoses a summary may assert (canonical -> aliases); anything here absent from the note is false
DIAGNOSES: dict[str, tuple[str, ...]] = {
    "heart failure": ("chf", "congestive heart failure", "heart failure exacerbation"),
    "pneumonia": ("aspiration pneumonia",), "copd exacerbation": ("aecopd",),
    "diabetic ketoacidosis": (), "gastrointestinal bleed": ("gi bleed", "gastrointestinal bleeding"),
    "stroke": ("ischemic stroke", "cva", "cerebrovascular accident"), "transient ischemic attack": ("tia",),
    "sepsis": ("septic shock", "urosepsis"), "urinary tract infection": ("pyelonephritis",),
    "atrial fibrillation": ("atrial flutter",), "cellulitis": (), "pulmonary embolism": (),
    "deep vein thrombosis": (), "acute pancreatitis": ("pancreatitis",),
    "myocardial infarction": ("nstemi", "stemi", "heart attack"), "acute kidney injury": (),
    "hyperkalemia": (), "hypokalemia": (), "delirium": (), "anemia": (), "hypertension": (),
    "type 2 diabetes": ("diabetes mellitus type 2",), "type 1 diabetes": ("diabetes mellitus type 1",),
    "chronic kidney disease": (), "hyperlipidemia": (), "hypothyroidism": (), "gerd": ("reflux",),
    "depression": (), "benign prostatic hyperplasia": (), "gout": (), "osteoarthritis": (), "obesity": (),
    "asthma": (), "cirrhosis": (), "c difficile infection": ("c diff",), "bacteremia": (),
    "endocarditis": (), "respiratory failure": ("intubated",), "cholecystitis": (), "peptic ulcer": (),
}
PROCEDURES: dict[str, tuple[str, ...]] = {
    "transthoracic echocardiogram": ("echocardiogram",), "transesophageal echocardiogram": ("tee",),
    "right heart catheterization": (), "left heart catheterization": ("cardiac catheterization",),
    "percutaneous coronary intervention": ("stent placement", "drug eluting stent"),
    "chest radiograph": (), "ct chest": ("chest ct",), "arterial blood gas": ("abg",),
    "noninvasive ventilation": ("bipap",), "mechanical ventilation": ("intubation",),
    "esophagogastroduodenoscopy": ("upper endoscopy",), "colonoscopy": (), "blood transfusion": ("transfused",),
    "mri brain": ("brain mri",), "ct head": ("head ct",), "carotid ultrasound": ("carotid duplex",),
    "ct angiography of the head and neck": ("cta head and neck",), "renal ultrasound": (),
    "ct abdomen and pelvis": (), "cardioversion": (), "venous duplex ultrasound": ("lower extremity duplex",),
    "incision and drainage": (), "ct pulmonary angiography": ("ct angiogram of the chest",),
    "thoracentesis": (), "paracentesis": (), "lumbar puncture": (), "central line placement": ("central line",),
    "hemodialysis": ("dialysis",), "ercp": ("endoscopic retrograde cholangiopancreatography",),
    "laparoscopic cholecystectomy": ("cholecystectomy",), "abdominal ultrasound": ("right upper quadrant ultrasound",),
    "inferior vena cava filter": ("ivc filter",), "thrombectomy": (), "thrombolysis": ("tpa", "alteplase"),
}
VOCAB: dict[str, tuple[str, tuple[str, ...]]] = {
    **{m: ("medication", a) for m, (_, a, _) in MEDS.items()},
    **{m: ("medication", a) for m, a in EXTRA_MEDS.items()},
    **{d: ("diagnosis", a) for d, a in DIAGNOSES.items()},
    **{p: ("procedure", a) for p, a in PROCEDURES.items()},
}


# ---------------------------------------------------------------------------------------------------
# Normalisation and matching.

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
#: (pattern, replacement) on normalised text, in order; both notes and summaries go through these
_REWRITES: list[tuple[re.Pattern[str], str]] = [(re.compile(p), r) for p, r in [
    (r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", "<num>"),
    (r"(\d)\s*(mg|mcg|g|units?|puffs?|ml|meq)\b", r"\1 \2"),
    (r"\bmilligrams?\b", "mg"), (r"\bmicrograms?\b", "mcg"),
    (r"\b(units|puffs|weeks|days|months|hours|hrs|hr)\b", "<sing>"),
    (r"(\d)\s*(%|percent\b)", r"\1%"),
    (r"\bpcp\b", "primary care"), (r"\btte\b", "transthoracic echocardiogram"),
    (r"\begd\b", "esophagogastroduodenoscopy"), (r"\bcxr\b|\bchest x ray\b", "chest radiograph"),
    (r"\bctpa\b|\bcta chest\b", "ct pulmonary angiography"), (r"\ba ?fib\b", "atrial fibrillation"),
    (r"\brvr\b", "rapid ventricular response"), (r"\bdka\b", "diabetic ketoacidosis"),
    (r"\butis?\b", "urinary tract infection"), (r"\bdvt\b", "deep vein thrombosis"),
    (r"\bgi\b", "gastrointestinal"), (r"\bl?v?ef\b", "ejection fraction"), (r"\bwbc\b", "white blood cell count"),
    (r"\brll\b", "right lower lobe"), (r"\blll\b", "left lower lobe"), (r"\brul\b", "right upper lobe"),
    (r"\blul\b", "left upper lobe"), (r"\brml\b", "right middle lobe"), (r"\bcbc\b", "complete blood count"),
    (r"\bbmp\b", "basic metabolic panel"), (r"\bpci\b", "percutaneous coronary intervention"),
    (r"\bckd\b", "chronic kidney disease"), (r"\bhtn\b", "hypertension"), (r"\bt2dm\b", "type 2 diabetes"),
    (r"\baki\b", "acute kidney injury"), (r"\bmri of the brain\b", "mri brain"),
    (r"\bbid\b|\b(twice|2 times) (a|per) day\b|\b2 times daily\b", "twice daily"),
    (r"\btid\b|\b3 times ((a|per) day|daily)\b", "three times daily"),
    (r"\bqid\b|\b4 times ((a|per) day|daily)\b", "four times daily"),
    (r"\bqhs\b|\bat bedtime\b|\bat night\b|\bevery night\b", "nightly"),
    (r"\bqd\b|\bonce daily\b|\bonce a day\b|\bevery day\b|\bper day\b|\ba day\b", "daily"),
    (r"\bq ?(\d+) ?h\b", r"every \1 hour"), (r"\bprn\b", "as needed"),
    (r"\bfollow(ed)? up\b|\bfollowup\b", "follow up"),
]]
_DOTTED = [(re.compile(p), r) for p, r in [  # forms whose dots matter, rewritten before clauses are split
    (r"\be\.\s?coli\b", "escherichia coli"), (r"\be coli\b", "escherichia coli"),
    (r"\bb\.i\.d\.?", "bid"), (r"\bt\.i\.d\.?", "tid"), (r"\bq\.i\.d\.?", "qid"), (r"\bq\.h\.s\.?", "qhs"),
    (r"\bq\.d\.?", "qd"), (r"\bp\.r\.n\.?", "prn"), (r"\bp\.o\.?", "po"), (r"\bdr\.", "dr"),
]]
_CLAUSE_SPLIT = re.compile(r"[;,:\n!?]|(?<!\d)\.|\.(?!\d)")
_UNITS_SINGULAR = {"units": "unit", "puffs": "puff", "weeks": "week", "days": "day", "months": "month",
                   "hours": "hour", "hrs": "hour", "hr": "hour"}
STOPWORDS = frozenset(
    "a an the of in on at to for with and or by from as is was were be been due secondary showed show shows "
    "revealed found noted demonstrated consistent clinic appointment visit follow up see seen scheduled "
    "arranged after within peak nadir level value score admitted admission grew".split()
)
NEGATIONS = frozenset("no not without denies denied negative never absent rule ruled free".split())
NOT_ASSERTED_AFTER = re.compile(r"^\s*(prophylaxis|prevention|risk|precautions|screening|was ruled out|ruled out)\b")


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """One canonical spelling for matching (see the module docstring)."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"[\u2010-\u2015\u2212]", "-", t)
    t = re.sub(r"(?<=[a-z0-9])[-/](?=[a-z])|(?<=[a-z])[-/](?=[0-9])", " ", t)
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)
    t = re.sub(r"[^\w\s.%]", " ", t)
    t = re.sub(r"\s+", " ", t).strip()
    for pattern, repl in _REWRITES:
        if repl == "<num>":
            t = pattern.sub(lambda m: _NUMBER_WORDS[m.group(1)], t)
        elif repl == "<sing>":
            t = pattern.sub(lambda m: _UNITS_SINGULAR[m.group(1)], t)
        else:
            t = pattern.sub(repl, t)
    return re.sub(r"\s+", " ", t).strip()


@lru_cache(maxsize=4096)
def clauses(text: str) -> tuple[str, ...]:
    """Normalised clauses: the scope of a negation and of a medication's dose."""
    t = unicodedata.normalize("NFKC", text).lower()
    for pattern, repl in _DOTTED:
        t = pattern.sub(repl, t)
    t = t.replace("(", " ").replace(")", " ")
    return tuple(c for c in (normalize(part) for part in _CLAUSE_SPLIT.split(t)) if c)


@lru_cache(maxsize=65536)
def keywords(phrase: str) -> frozenset[str]:
    return frozenset(w for w in normalize(phrase).split() if w not in STOPWORDS)


_AMOUNT = re.compile(r"(\d+(?:\.\d+)?) (mg|mcg|g|unit|puff|ml|meq)\b")
_FREQUENCY = re.compile(r"four times daily|three times daily|twice daily|every \d+ hour|nightly|weekly|"
                        r"with meals|daily")
_TO_MG = {"g": 1000.0, "mg": 1.0, "mcg": 0.001}


@dataclass(frozen=True)
class Dose:
    amount: float | None  # in mg for mass units
    unit: str | None      # "mg" for any mass unit, else unit / puff / ml / meq
    frequency: str | None

    def matches(self, other: Dose) -> bool:
        """Same amount and unit; frequencies must agree only when both are stated."""
        if self.amount is None or other.amount is None:
            return False
        if self.unit != other.unit or abs(self.amount - other.amount) > 1e-6 * max(1.0, self.amount):
            return False
        return self.frequency is None or other.frequency is None or self.frequency == other.frequency


def parse_dose(text: str) -> Dose:
    t = normalize(text)
    m = _AMOUNT.search(t)
    amount = unit = None
    if m:
        unit = m.group(2)
        amount = float(m.group(1)) * _TO_MG.get(unit, 1.0)
        unit = "mg" if unit in _TO_MG else unit
    f = _FREQUENCY.search(t)
    return Dose(amount, unit, f.group(0) if f else None)


Entry = tuple[str, str, tuple[str, ...]]  # (canonical, kind, aliases)


@lru_cache(maxsize=4096)
def _matcher(entries: tuple[Entry, ...]) -> tuple[re.Pattern[str] | None, dict[str, tuple[str, str]]]:
    """One regex over the terms (longest first), and surface form -> (kind, canonical)."""
    surface: dict[str, tuple[str, str]] = {}
    for canonical, kind, aliases in entries:
        for form in (canonical, *aliases):
            n = normalize(form)
            if n:
                surface.setdefault(n, (kind, normalize(canonical)))
    if not surface:
        return None, surface
    alts = sorted(surface, key=len, reverse=True)
    return re.compile(r"(?<![\w.%])(?:" + "|".join(map(re.escape, alts)) + r")(?![\w%])"), surface


_VOCAB_ENTRIES: tuple[Entry, ...] = tuple((c, k, a) for c, (k, a) in VOCAB.items())


@dataclass
class _Mention:
    kind: str
    canonical: str
    surface: str
    asserted: bool
    dose: Dose | None  # medications only


def _spans(c: str, extra: tuple[Entry, ...]) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, canonical) of known terms in a clause: the longest wins an overlap, and the
    record's own names win a tie (so its "metoprolol" is its own metoprolol)."""
    found = []
    for priority, entries in enumerate((extra, _VOCAB_ENTRIES)):
        regex, surface = _matcher(entries)
        if regex is not None:
            found += [(m.start(), -(m.end() - m.start()), priority, m.end(), *surface[m.group(0)])
                      for m in regex.finditer(c)]
    out, last = [], 0
    for start, _, _, end, kind, canonical in sorted(found):
        if start >= last:
            out.append((start, end, kind, canonical))
            last = end
    return out


def _mentions(cls: Sequence[str], extra: tuple[Entry, ...]) -> list[_Mention]:
    out: list[_Mention] = []
    for c in cls:
        found = _spans(c, extra)
        for i, (start, end, kind, canonical) in enumerate(found):
            before = c[:start].split()[-6:]
            asserted = not (NEGATIONS & set(before)) and not NOT_ASSERTED_AFTER.match(c[end:])
            dose = None
            if kind == "medication":
                dose = parse_dose(c[end: found[i + 1][0] if i + 1 < len(found) else len(c)])
            out.append(_Mention(kind, canonical, c[start:end], asserted, dose))
    return out


def _record_vocab(record: DischargeRecord) -> tuple[Entry, ...]:
    """The record's own fact names join the vocabulary, so user data with other drugs works too."""
    extra = []
    for f in record.facts:
        if f.kind == "medication" and f.name:
            extra.append((f.name, "medication", tuple(f.aliases)))
        elif f.kind in ("diagnosis", "procedure"):
            extra.append((f.text, f.kind, tuple(f.aliases)))
    return tuple(sorted(extra))


def _canonical(name: str, extra: tuple[Entry, ...]) -> str:
    n = normalize(name)
    for entries in (extra, _VOCAB_ENTRIES):
        hit = _matcher(entries)[1].get(n)
        if hit:
            return hit[1]
    return n


@dataclass
class Assessment:
    """What the rubric saw in one summary: the numbers and the reasons behind them."""

    fact_recall: float
    missing: list[str] = field(default_factory=list)
    wrong_doses: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    words: int = 0
    likert: int = 1

    @property
    def false_facts(self) -> int:
        return len(self.wrong_doses) + len(self.invented)


def likert_score(recall: float, false_facts: int, words: int) -> int:
    """The RUBRIC as arithmetic."""
    if words == 0:
        return 1
    omission = 0 if recall >= 1.0 else 1 if recall > 0.75 else 2 if recall > 0.5 else 3
    return max(1, 5 - omission - false_facts - (words > MAX_WORDS))


def assess(record: DischargeRecord, summary: str | None) -> Assessment:
    """Score one summary against its record's key facts and note (rules in the module docstring)."""
    text = summary or ""
    extra = _record_vocab(record)
    s_clauses = clauses(text)
    s_words = set(" ".join(s_clauses).split())
    s_mentions = _mentions(s_clauses, extra)
    n_clauses = clauses(record.note)
    n_mentions = _mentions(n_clauses, extra)
    note_text = " " + " ".join(n_clauses) + " "
    note_terms = {m.canonical for m in n_mentions}
    note_doses: dict[str, list[Dose]] = {}
    for m in n_mentions:
        if m.dose is not None and m.dose.amount is not None:
            note_doses.setdefault(m.canonical, []).append(m.dose)

    missing: list[str] = []
    wrong: list[str] = []
    for f in record.facts:
        if f.kind == "medication":
            name = _canonical(f.name or f.text, extra)
            stated = [m.dose for m in s_mentions if m.canonical == name and m.dose is not None]
            gold = parse_dose(f.dose or "")
            recalled = any(d.matches(gold) for d in stated) if gold.amount is not None else bool(stated)
            if not recalled:
                missing.append(f.text)
            allowed = [gold, *note_doses.get(name, [])]
            if any(d.amount is not None and not any(d.matches(a) for a in allowed) for d in stated):
                wrong.append(f.text)
        elif not any(keywords(alt) <= s_words for alt in (f.text, *f.aliases)):
            missing.append(f.text)
    invented = sorted({m.canonical for m in s_mentions if m.asserted and m.canonical not in note_terms
                       and f" {m.surface} " not in note_text and f" {m.canonical} " not in note_text})
    recall = 1 - len(missing) / len(record.facts)
    words = len(text.split())
    return Assessment(recall, missing, wrong, invented, words, likert_score(recall, len(wrong) + len(invented), words))


def score_summary(record: DischargeRecord, summary: str | None) -> dict[str, float]:
    """fact_recall, false_facts, wrong_doses, invented_facts and likert of one summary."""
    a = assess(record, summary)
    return {"fact_recall": a.fact_recall, "false_facts": float(a.false_facts), "wrong_doses": float(len(a.wrong_doses)),
            "invented_facts": float(len(a.invented)), "likert": float(a.likert)}


# ---------------------------------------------------------------------------------------------------
# The task.

_ARTEFACTS = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]|<end_of_turn>|<start_of_turn>(model|user)?|```\w*")
_LEADING = re.compile(r"^\s*(assistant\s*\n|\**\s*(brief |short |discharge )?summary\s*\**\s*:\s*\**)", re.I)


class DischargeSummaryTask(Task):
    id = "discharge_summary"
    description = "Discharge note -> short summary (rubric Likert, fact recall, false facts)"
    record_type = DischargeRecord
    choices = None
    max_new_tokens = 160

    def prompt(self, record: DischargeRecord) -> str:
        return ("Summarize this discharge note for the patient's primary care physician in 2-5 sentences: the "
                "diagnosis, key findings and procedures, every discharge medication with its dose, and the "
                "follow-up plan. Do not add anything that is not in the note.\n\n" + record.note)

    def answer(self, record: DischargeRecord) -> str:
        return record.summary

    def baseline_features(self, record: DischargeRecord) -> str:
        return record.note

    extractive_description = "the note's diagnosis line, discharge medication and follow-up lists"

    def extractive_answer(self, record: DischargeRecord) -> str:
        """What a clerk would copy out of the note: its diagnosis, medication list and follow-up list
        (any of them missing from a user's note is skipped)."""
        lines = [x.strip() for x in record.note.splitlines()]
        dx = next((x.split(":", 1)[1].strip().rstrip(".") for x in lines
                   if x.lower().startswith("discharge diagnosis:")), None)

        def listed(heading: str) -> list[str]:
            start = next((i for i, x in enumerate(lines) if x.lower().rstrip(":") == heading), None)
            if start is None:
                return []
            items = []
            for x in lines[start + 1:]:
                if not x.startswith("- "):
                    break
                items.append(re.sub(r"\s*\((?:new|NEW)\)$", "", x[2:]).strip())
            return [i for i in items if i.lower() != "none"]

        out = [f"Admitted for {dx}."] if dx else []
        if meds := listed("discharge medications"):
            out.append("Discharge medications: " + ", ".join(meds) + ".")
        if follow := listed("follow-up"):
            out.append("Follow-up: " + _join(follow) + ".")
        return " ".join(out) or super().extractive_answer(record)

    def parse(self, text: str) -> Prediction:
        """The model's summary without chat-template tokens or a 'Summary:' heading; None if empty."""
        t = _ARTEFACTS.sub(" ", text)
        for _ in range(3):  # "assistant", then "Summary:", in either order
            t = _LEADING.sub("", t.strip(), count=1)
        t = re.sub(r"[ \t]+", " ", t).strip()
        return t or None

    def judge(self, record: DischargeRecord, answer: str) -> float:
        """The rubric's Likert (1-5; false facts and length already lower it), with fact recall (0-1)
        at a tenth of a Likert point to order summaries of the same grade."""
        s = score_summary(record, self.parse(answer))
        return s["likert"] + 0.1 * s["fact_recall"]

    @property
    def metrics(self) -> tuple[Metric, ...]:
        def metric(key: str, higher_is_better: bool) -> Metric:
            def per_item(r: DischargeRecord, p: Prediction) -> float:
                return score_summary(r, p)[key]

            def compute(recs: Sequence[DischargeRecord], preds: Sequence[Prediction]) -> float:
                vals = [per_item(r, p) for r, p in zip(recs, preds, strict=True)]
                return sum(vals) / len(vals) if vals else float("nan")

            return Metric(key, "wilcoxon", compute, per_item=per_item, higher_is_better=higher_is_better,
                          mean=True)

        return (metric("likert", True), metric("fact_recall", True), metric("false_facts", False))

    @property
    def rejected_builders(self) -> dict[str, RejectedBuilder]:
        return {"omit_fact": omit_fact, "wrong_dose": wrong_dose, "invented_fact": invented_fact}

    def generate(self, n: int, seed: int) -> list[DischargeRecord]:
        rng = random.Random(seed)
        out: list[DischargeRecord] = []
        seen: set[str] = set()
        while len(out) < n:
            rec = make_record(rng, f"dc-{len(out) + 1:06d}")
            if rec.note in seen:
                continue
            seen.add(rec.note)
            out.append(rec)
        return out


# ---------------------------------------------------------------------------------------------------
# Synthetic notes. Each admission type writes its own HPI, course, procedures and findings; the key
# facts are kept beside the note, and the reference summary is rendered from them.


@dataclass
class _Admission:
    dx: str
    dx_aliases: tuple[str, ...]
    presentation: str
    course: list[str]
    findings: list[tuple[str, tuple[str, ...]]]
    procedures: list[tuple[str, str]]  # (name, result for the Procedures section)
    meds: list[str]                    # discharge medications, most essential first
    required: int                      # how many of ``meds`` are always given
    follow_up: list[str]
    avoid: frozenset[str] = frozenset()  # drug classes unsafe here (no NSAIDs after a bleed, ...)
    comorbid: tuple[str, ...] = ()       # comorbidities this admission always has
    hr: int | None = None                # admission heart rate when the HPI states it
    doses: dict[str, tuple[str, ...]] = field(default_factory=dict)  # doses for this indication
    dose_notes: dict[str, str] = field(default_factory=dict)         # e.g. the step-down after a loading dose


@dataclass
class _Patient:
    age: int
    sex: str
    comorbid: list[str]


def _side(rng: random.Random) -> str:
    return pick(rng, ("right", "left"))


def _chf(rng: random.Random, pt: _Patient) -> _Admission:
    ef = pick(rng, (20, 25, 30, 35, 40, 45))
    gain = rng.randint(4, 12)
    net = rng.choice((2.5, 3.1, 3.8, 4.2, 5.0, 5.6, 6.3))
    meds = ["furosemide" if rng.random() < 0.7 else "torsemide", pick(rng, ("metoprolol succinate", "carvedilol")),
            pick(rng, ("lisinopril", "losartan")), "spironolactone", "empagliflozin"]
    return _Admission(
        "acute decompensated heart failure",
        ("heart failure exacerbation", "decompensated heart failure", "chf exacerbation", "acute heart failure"),
        f"{pick(rng, ('two weeks', 'ten days', 'one week'))} of progressive dyspnea on exertion, orthopnea and a "
        f"{gain}-pound weight gain",
        [f"Diuresed with IV furosemide with net negative {net} L and resolution of hypoxia.",
         pick(rng, ("Creatinine peaked at 1.6 and returned to baseline.", "Electrolytes were repleted daily.",
                    "Guideline-directed therapy was started once euvolemic."))],
        [(f"ejection fraction {ef}%", (f"ef {ef}%",))],
        [("transthoracic echocardiogram", f"ejection fraction {ef}%, "
          + pick(rng, ("moderate mitral regurgitation", "dilated left ventricle", "no significant valve disease")))],
        meds, 2 + (ef <= 40), [f"cardiology clinic in {pick(rng, ('1 week', '2 weeks'))}",
                               "repeat basic metabolic panel in 1 week"],
        frozenset({"ccb", "thiazide"}), ("heart failure with reduced ejection fraction",) if ef <= 40 else (),
    )


def _pneumonia(rng: random.Random, pt: _Patient) -> _Admission:
    lobe = pick(rng, ("right lower lobe", "left lower lobe", "right middle lobe", "right upper lobe"))
    abx = pick(rng, ("amoxicillin-clavulanate", "cefpodoxime", "levofloxacin", "doxycycline"))
    meds = [abx] + (["azithromycin"] if abx in ("amoxicillin-clavulanate", "cefpodoxime") else []) + ["benzonatate"]
    return _Admission(
        "community-acquired pneumonia", ("pneumonia", "cap"),
        f"{rng.randint(3, 7)} days of productive cough, fever to {rng.choice((38.6, 38.9, 39.2, 39.4))} C and "
        "pleuritic chest pain",
        [f"Treated with IV ceftriaxone and azithromycin, transitioned to oral {abx} on day {rng.randint(2, 4)}.",
         f"Oxygen weaned from {rng.randint(2, 4)} L to room air. Blood cultures remained negative."],
        [(f"{lobe} consolidation", (f"{lobe} pneumonia",))],
        [("chest radiograph", f"{lobe} consolidation without effusion")]
        + ([("CT chest", f"{lobe} consolidation, no abscess")] if rng.random() < 0.3 else []),
        meds, 1, ["primary care in 1 week", "repeat chest imaging in 6 weeks"],
    )


def _copd(rng: random.Random, pt: _Patient) -> _Admission:
    pco2 = rng.randint(50, 68)
    bipap = rng.random() < 0.4
    meds = ["prednisone", "tiotropium", "albuterol inhaler", "budesonide-formoterol",
            pick(rng, ("azithromycin", "doxycycline"))]
    return _Admission(
        "COPD exacerbation", ("acute exacerbation of COPD", "aecopd", "copd flare"),
        f"worsening dyspnea, wheeze and increased sputum for {rng.randint(2, 6)} days",
        [f"Received nebulized bronchodilators, IV methylprednisolone and {meds[-1]}.",
         ("Required noninvasive ventilation for the first night. " if bipap else "")
         + f"Discharged on prednisone to complete {rng.randint(3, 5)} more days."],
        [(f"hypercapnia with pCO2 {pco2}", (f"pCO2 {pco2}",))],
        [("arterial blood gas", f"pH 7.{rng.randint(28, 34)}, hypercapnia with pCO2 {pco2}")]
        + ([("noninvasive ventilation", "BiPAP overnight on hospital day 1")] if bipap else []),
        meds, 3, [f"pulmonology clinic in {pick(rng, ('2 weeks', '3 weeks'))}", "pulmonary rehabilitation referral"],
        comorbid=("former tobacco use",),
    )


def _dka(rng: random.Random, pt: _Patient) -> _Admission:
    gap, glucose = rng.randint(22, 34), rng.randint(420, 760)
    a1c = rng.choice((9.8, 10.4, 11.2, 12.1, 13.5))
    trigger = pick(rng, ("missed insulin doses", "a viral gastroenteritis", "an insulin pump failure"))
    return _Admission(
        "diabetic ketoacidosis", ("dka",),
        f"nausea, vomiting and polyuria after {trigger}; glucose {glucose} with anion gap {gap}",
        [f"Managed in the ICU on an insulin infusion; anion gap {gap} closed within {rng.randint(12, 30)} hours.",
         f"Hemoglobin A1c {a1c}%. "
         "Transitioned to subcutaneous insulin and seen by diabetes education."],
        [(f"hemoglobin A1c {a1c}%", (f"A1c {a1c}%",))],
        [] if rng.random() < 0.8 else [("central line placement", "right internal jugular, no complications")],
        ["insulin glargine", "insulin lispro", "glucagon"], 2,
        [f"endocrinology clinic in {pick(rng, ('1 week', '2 weeks'))}", "primary care in 2 weeks"],
        comorbid=("type 1 diabetes",),
    )


def _gi_bleed(rng: random.Random, pt: _Patient) -> _Admission:
    ulcer = pick(rng, ("duodenal ulcer", "gastric ulcer"))
    units = rng.randint(1, 4)
    hgb = rng.choice((6.4, 6.9, 7.1, 7.4, 7.8))
    return _Admission(
        "upper gastrointestinal bleed", ("upper gi bleed", "ugib", "upper gastrointestinal bleeding"),
        f"melena for {rng.randint(1, 4)} days and lightheadedness; hemoglobin {hgb} on arrival",
        [f"Received IV pantoprazole and {units} unit{'s' if units > 1 else ''} of packed red blood cells.",
         f"Hemoglobin stable at {rng.choice((8.4, 8.9, 9.3, 9.6))} for 48 hours before discharge."],
        [(ulcer, ())],
        [("esophagogastroduodenoscopy", f"{ulcer} with visible vessel, treated with clips and epinephrine"),
         ("blood transfusion", f"{units} unit{'s' if units > 1 else ''} of packed red blood cells")],
        ["pantoprazole", "sucralfate", "ferrous sulfate"], 1,
        [f"gastroenterology clinic in {pick(rng, ('4 weeks', '6 weeks'))}", "repeat complete blood count in 1 week"],
        frozenset({"antiplatelet", "anticoag", "p2y12", "ppi"}),
    )


def _stroke(rng: random.Random, pt: _Patient) -> _Admission:
    side = _side(rng)
    deficit = "right-sided weakness and aphasia" if side == "left" else "left-sided weakness and facial droop"
    nihss = rng.randint(2, 9)
    return _Admission(
        "acute ischemic stroke", ("ischemic stroke", "stroke", "cva"),
        f"sudden {deficit}, last known well {rng.randint(6, 20)} hours before arrival; NIHSS {nihss}",
        [f"Outside the thrombolysis window. Started dual antiplatelet therapy for {pick(rng, ('21', '90'))} days.",
         "Passed a bedside swallow study and worked with physical therapy."],
        [(f"{side} middle cerebral artery infarct", (f"{side} mca infarct",))],
        [("MRI brain", f"acute {side} middle cerebral artery infarct"),
         ("carotid ultrasound", pick(rng, ("no hemodynamically significant stenosis", "mild plaque, under 50% stenosis")))],
        ["aspirin", "clopidogrel", "atorvastatin"], 3,
        [f"neurology clinic in {pick(rng, ('4 weeks', '6 weeks'))}", "outpatient physical therapy"],
        frozenset({"anticoag"}),
    )


def _urosepsis(rng: random.Random, pt: _Patient) -> _Admission:
    org = pick(rng, ("Escherichia coli", "Klebsiella pneumoniae", "Proteus mirabilis"))
    lactate = rng.choice((2.4, 2.9, 3.3, 3.8, 4.1))
    abx = pick(rng, ("ciprofloxacin", "cephalexin", "cefpodoxime"))
    return _Admission(
        "sepsis secondary to urinary tract infection", ("urosepsis", "sepsis from urinary tract infection"),
        f"fever, dysuria and confusion; lactate {lactate} with hypotension responsive to fluids",
        [f"Received 30 mL/kg IV fluids and ceftriaxone, narrowed to oral {abx} by culture.",
         f"Urine culture grew {org}; blood cultures {pick(rng, ('were negative', 'grew the same organism'))}.",
         f"Mental status returned to baseline by day {rng.randint(2, 3)}."],
        [(f"urine culture grew {org}", (org,))],
        [("renal ultrasound", pick(rng, ("no hydronephrosis", "no hydronephrosis or abscess")))]
        + ([("CT abdomen and pelvis", "no obstructing stone")] if rng.random() < 0.3 else []),
        [abx], 1, ["primary care in 1 week"],
    )


def _afib(rng: random.Random, pt: _Patient) -> _Admission:
    hr = rng.randint(138, 176)
    chads = ((pt.age >= 75) * 2 + (65 <= pt.age < 75) + (pt.sex == "woman") + ("hypertension" in pt.comorbid)
             + ("type 2 diabetes" in pt.comorbid))
    rate = pick(rng, ("diltiazem", "metoprolol tartrate"))
    cv = rng.random() < 0.3
    reduced = pt.age >= 80 and "chronic kidney disease stage 3" in pt.comorbid
    return _Admission(
        "atrial fibrillation with rapid ventricular response", ("afib with rvr", "rapid atrial fibrillation"),
        f"palpitations and dyspnea; heart rate {hr} in atrial fibrillation",
        [f"Rate controlled with IV diltiazem then oral {rate}. CHA2DS2-VASc score {chads}; started apixaban"
         + (" at a reduced dose for age and renal function." if reduced else ".")]
        + (["Converted to sinus rhythm after cardioversion."] if cv else ["Remained in rate-controlled atrial fibrillation."]),
        [(f"CHA2DS2-VASc score {chads}", (f"CHADS-VASc {chads}",))],
        [("transthoracic echocardiogram", f"ejection fraction {pick(rng, (50, 55, 60))}%, mildly dilated left atrium")]
        + ([("cardioversion", "synchronized, 200 J, successful")] if cv else []),
        ["apixaban", rate], 2, [f"cardiology clinic in {pick(rng, ('1 week', '2 weeks'))}"],
        frozenset({"anticoag", "beta" if rate == "diltiazem" else "ccb_rate"}), hr=hr,
        doses={"apixaban": ("2.5 mg twice daily",) if reduced else ("5 mg twice daily",)},
    )


def _cellulitis(rng: random.Random, pt: _Patient) -> _Admission:
    side = _side(rng)
    wbc = rng.choice((12.8, 13.6, 14.2, 15.9, 17.3))
    abscess = rng.random() < 0.35
    return _Admission(
        f"{side} lower extremity cellulitis", (f"{side} leg cellulitis", "cellulitis"),
        f"{rng.randint(2, 5)} days of spreading erythema, warmth and pain of the {side} lower leg",
        [f"Treated with IV cefazolin with receding erythema; white blood cell count {wbc} normalized.",
         "Leg elevation and wound care were taught."],
        [(f"white blood cell count {wbc}", (f"wbc {wbc}",))],
        [("venous duplex ultrasound", "no deep vein thrombosis")]
        + ([("incision and drainage", "3 cm abscess drained, packing placed")] if abscess else []),
        ["cephalexin", "doxycycline", "acetaminophen"], 2,
        [f"primary care in {pick(rng, ('3 days', '1 week'))}"] + (["wound check in 2 days"] if abscess else []),
    )


def _pe(rng: random.Random, pt: _Patient) -> _Admission:
    side = pick(rng, ("bilateral", "right", "left"))
    anticoag = pick(rng, ("apixaban", "rivaroxaban"))
    hr = rng.randint(104, 128)
    return _Admission(
        "pulmonary embolism", ("pe",),
        f"pleuritic chest pain and dyspnea {rng.randint(1, 5)} days after "
        f"{pick(rng, _PE_RISK[:2] if pt.age >= 50 else _PE_RISK[::2])}; heart rate {hr}",
        [f"Started on heparin infusion, then oral {anticoag}. Troponin was "
         + pick(rng, ("normal.", "mildly elevated without right ventricular strain.")),
         "Ambulating on room air at discharge."],
        [(f"{side} segmental pulmonary emboli", (f"{side} segmental emboli",))],
        [("CT pulmonary angiography", f"{side} segmental pulmonary emboli"),
         ("venous duplex ultrasound", pick(rng, ("no deep vein thrombosis", "left popliteal deep vein thrombosis")))],
        [anticoag, "acetaminophen"], 1,
        [f"primary care in {pick(rng, ('1 week', '2 weeks'))}", "hematology clinic in 3 months"],
        frozenset({"antiplatelet"}), hr=hr,
        doses={"apixaban": ("10 mg twice daily",), "rivaroxaban": ("15 mg twice daily",)},
        dose_notes={"apixaban": " for 7 days, then 5 mg twice daily", "rivaroxaban": " for 21 days, then 20 mg daily"},
    )


_PE_RISK = ("a long flight", "knee replacement surgery", "a week of bed rest with influenza")


def _nstemi(rng: random.Random, pt: _Patient) -> _Admission:
    vessel = pick(rng, ("left anterior descending artery", "right coronary artery", "left circumflex artery"))
    trop = rng.choice((1.8, 3.4, 5.6, 8.2, 12.5))
    p2y12 = pick(rng, ("ticagrelor", "clopidogrel"))
    return _Admission(
        "non-ST-elevation myocardial infarction", ("NSTEMI",),
        f"substernal chest pressure at rest for {rng.randint(1, 6)} hours; peak troponin {trop}",
        [f"Treated with heparin and aspirin, then catheterization with a stent to the {vessel}.",
         "Chest pain free after the procedure; started on a high-intensity statin."],
        [(f"peak troponin {trop}", (f"troponin {trop}",))],
        [("left heart catheterization", f"90% stenosis of the {vessel}"),
         ("percutaneous coronary intervention", f"drug-eluting stent to the {vessel}")],
        ["aspirin", p2y12, "atorvastatin", "metoprolol succinate", "nitroglycerin"], 4,
        ["cardiology clinic in 2 weeks", "cardiac rehabilitation referral"],
        frozenset({"anticoag", "statin", "beta"}),
    )


def _pancreatitis(rng: random.Random, pt: _Patient) -> _Admission:
    lipase = rng.randint(900, 4800)
    gallstone = rng.random() < 0.6
    return _Admission(
        "acute gallstone pancreatitis" if gallstone else "acute alcohol-associated pancreatitis",
        ("gallstone pancreatitis",) if gallstone else ("alcoholic pancreatitis",),
        f"epigastric pain radiating to the back with vomiting; lipase {lipase}",
        ["Managed with IV fluids, analgesia and early oral feeding."]
        + (["General surgery performed cholecystectomy before discharge."] if gallstone
           else ["Counseled on alcohol cessation; started thiamine and folate."]),
        [(f"lipase {lipase}", ())],
        [("abdominal ultrasound", "cholelithiasis without cholecystitis" if gallstone else "no gallstones")]
        + ([("laparoscopic cholecystectomy", "uncomplicated")] if gallstone else []),
        ["ondansetron", "oxycodone", "acetaminophen", "pancrelipase"], 2,
        ["general surgery clinic in 2 weeks" if gallstone else "gastroenterology clinic in 4 weeks",
         "primary care in 1 week"],
        frozenset({"antiplatelet"}),
    )


ADMISSIONS: dict[str, Callable[[random.Random, _Patient], _Admission]] = {
    "heart failure": _chf, "pneumonia": _pneumonia, "copd": _copd, "dka": _dka, "gi bleed": _gi_bleed,
    "stroke": _stroke, "urosepsis": _urosepsis, "afib": _afib, "cellulitis": _cellulitis, "pe": _pe,
    "nstemi": _nstemi, "pancreatitis": _pancreatitis,
}

#: comorbidity -> home medications that come with it
COMORBIDITIES: dict[str, tuple[str, ...]] = {
    "hypertension": ("amlodipine", "hydrochlorothiazide", "lisinopril"), "type 2 diabetes": ("metformin",),
    "hyperlipidemia": ("atorvastatin", "rosuvastatin"), "hypothyroidism": ("levothyroxine",),
    "GERD": ("omeprazole",), "chronic kidney disease stage 3": (), "depression": ("sertraline",),
    "benign prostatic hyperplasia": ("tamsulosin",), "gout": ("allopurinol",), "osteoarthritis": ("acetaminophen",),
    "obesity": (), "former tobacco use": (),
}
_PROC_ALIASES = {normalize(p): a for p, a in PROCEDURES.items()}
_FEBRILE = {"pneumonia", "urosepsis", "cellulitis"}
_HYPOXIC = {"heart failure", "pneumonia", "copd", "pe"}
DIETS = {"heart failure": "2 g sodium diet with a 2 L fluid restriction", "dka": "carbohydrate-consistent diet",
         "nstemi": "heart-healthy diet", "pancreatitis": "low-fat diet", "stroke": "regular diet, thin liquids"}
RETURN_SIGNS = {
    "heart failure": "weight gain of more than 3 pounds in a day, worsening shortness of breath or leg swelling",
    "pneumonia": "fever over 38.5 C, worsening cough or shortness of breath",
    "copd": "worsening breathlessness or needing albuterol more often than every 4 hours",
    "dka": "glucose over 300 with vomiting, or glucose under 70 that does not correct",
    "gi bleed": "black or bloody stools, vomiting blood or lightheadedness",
    "stroke": "new weakness, numbness, facial droop or trouble speaking (call 911)",
    "urosepsis": "fever, flank pain or confusion",
    "afib": "palpitations, chest pain, fainting or any bleeding",
    "cellulitis": "spreading redness, fever or red streaks up the leg",
    "pe": "chest pain, shortness of breath or any major bleeding",
    "nstemi": "chest pain not relieved by one nitroglycerin tablet (call 911)",
    "pancreatitis": "worsening abdominal pain, vomiting or fever",
}


#: age range per admission type (no COPD at 38, no DKA at 90)
AGES = {"copd": (52, 90), "heart failure": (48, 93), "stroke": (45, 93), "nstemi": (40, 88), "afib": (55, 93),
        "dka": (18, 58), "pancreatitis": (28, 80), "cellulitis": (25, 90), "pe": (25, 85)}
_RESPIRATORY = _HYPOXIC | {"afib"}


def _vitals(rng: random.Random, key: str, adm: _Admission) -> str:
    temp = rng.choice((38.3, 38.6, 38.9, 39.2)) if key in _FEBRILE else rng.choice((36.5, 36.8, 37.0, 37.2))
    spo2 = rng.randint(84, 90) if key in _HYPOXIC else rng.randint(94, 99)
    hr = adm.hr or (rng.randint(96, 124) if key in _FEBRILE | {"gi bleed", "dka"} else rng.randint(62, 96))
    sbp = rng.randint(84, 98) if key in {"urosepsis", "gi bleed"} else rng.randint(112, 172)
    rr = rng.randint(22, 30) if key in _RESPIRATORY else rng.randint(14, 20)
    o2 = "room air" if spo2 >= 92 else pick(rng, ("room air", "2 L nasal cannula"))
    return f"Admission vitals: T {temp} C, HR {hr}, BP {sbp}/{rng.randint(52, 94)}, RR {rr}, SpO2 {spo2}% on {o2}."


def _labs(rng: random.Random, key: str, comorbid: Sequence[str]) -> str:
    k = rng.choice((5.4, 5.8, 6.1)) if key == "dka" else rng.choice((3.6, 3.9, 4.1, 4.4, 4.7))
    if "chronic kidney disease stage 3" in comorbid:
        cr = rng.choice((1.5, 1.7, 1.9, 2.2))
    elif key in {"urosepsis", "dka"}:
        cr = rng.choice((1.4, 1.7, 2.1))
    else:
        cr = rng.choice((0.7, 0.8, 0.9, 1.0, 1.1))
    hgb = "" if key == "gi bleed" else f", hemoglobin {rng.choice((10.9, 11.8, 12.6, 13.4, 14.1))}"
    return f"Admission labs: sodium {rng.randint(131, 144)}, potassium {k}, creatinine {cr}{hgb}."


_DISPOSITION = ("home", "home with home health services", "home with family", "a skilled nursing facility")


def _dose(med: str, rng: random.Random, adm: _Admission | None = None) -> str:
    return pick(rng, (adm.doses.get(med) if adm else None) or MEDS[med][0])


_FILLERS = ("acetaminophen", "polyethylene glycol", "senna")  # common discharge additions, so every list has 3


def _choose_meds(rng: random.Random, adm: _Admission, comorbid: list[str]) -> list[tuple[str, str]]:
    """The admission's essential drugs, then optional ones and home drugs, 3-7 in all, one per class."""
    target = rng.randint(3, 7)
    chosen: list[str] = list(adm.meds[: adm.required])
    optional = adm.meds[adm.required:]
    home = [m for c in comorbid for m in COMORBIDITIES.get(c, ())]
    rng.shuffle(optional)
    rng.shuffle(home)
    classes = {MEDS[m][2] for m in chosen}
    for m in optional + home + list(_FILLERS):
        if len(chosen) >= max(target, 3):
            break
        cls = MEDS[m][2]
        if m in chosen or cls in classes or cls in adm.avoid:
            continue
        chosen.append(m)
        classes.add(cls)
    return [(m, _dose(m, rng, adm)) for m in chosen]


_MALE_ONLY = {"benign prostatic hyperplasia"}
_MIN_AGE = {"benign prostatic hyperplasia": 50, "osteoarthritis": 45, "gout": 35, "chronic kidney disease stage 3": 40}


def make_record(rng: random.Random, rid: str) -> DischargeRecord:
    """One note with its key facts and a reference summary rendered from them."""
    key = pick(rng, sorted(ADMISSIONS))
    sex = pick(rng, ("man", "woman"))
    age = rng.randint(*AGES.get(key, (30, 92)))
    pool = [c for c in COMORBIDITIES if not (c in _MALE_ONLY and sex == "woman") and age >= _MIN_AGE.get(c, 0)]
    if key == "dka":
        pool = [c for c in pool if c not in ("type 2 diabetes", "benign prostatic hyperplasia")]
    pt = _Patient(age, sex, rng.sample(pool, rng.randint(1, 3)))
    adm = ADMISSIONS[key](rng, pt)
    comorbid = list(adm.comorbid) + [c for c in pt.comorbid if c not in adm.comorbid]
    meds = _choose_meds(rng, adm, comorbid)
    follow = adm.follow_up[: rng.randint(1, len(adm.follow_up))]
    los = rng.randint(2, 8)

    facts = [Fact(kind="diagnosis", text=adm.dx, aliases=list(adm.dx_aliases))]
    facts += [Fact(kind="finding", text=t, aliases=list(a)) for t, a in adm.findings]
    facts += [Fact(kind="procedure", text=p, aliases=list(_PROC_ALIASES.get(normalize(p), ()))) for p, _ in adm.procedures]
    facts += [Fact(kind="medication", text=f"{m} {d}", name=m, dose=d, aliases=list(MEDS[m][1])) for m, d in meds]
    facts += [Fact(kind="follow_up", text=f) for f in follow]

    hpi_open = pick(rng, ("presented with", "was admitted with", "came to the emergency department with"))
    med_lines = [f"- {m} {d}{adm.dose_notes.get(m, '')}" + (pick(rng, (" (new)", " (NEW)", "")) if m in adm.meds else "")
                 for m, d in meds]
    activity = pick(rng, ("activity as tolerated", "walk daily, no heavy lifting for 1 week")
                    + (("activity as tolerated with a walker",) if age >= 75 else ()))
    code = pick(rng, (" Code status: full code.", "") + ((" Code status: DNR/DNI.",) if age >= 70 else ()))
    note = "\n".join([
        pick(rng, ("DISCHARGE SUMMARY", "Discharge Summary", "HOSPITAL DISCHARGE NOTE")),
        f"Length of stay: {los} days. Disposition: {pick(rng, _DISPOSITION)}.",
        f"Discharge diagnosis: {adm.dx}.",
        f"HPI: {age}-year-old {sex} with {pick(rng, ('a history of ', ''))}{_join(comorbid)} who {hpi_open} "
        f"{adm.presentation}.",
        _vitals(rng, key, adm),
        _labs(rng, key, comorbid),
        "Hospital course: " + " ".join(adm.course),
        "Procedures:", *([f"- {p}: {r}" for p, r in adm.procedures] or ["- none"]),
        "Discharge medications:", *med_lines,
        "Follow-up:", *[f"- {f}" for f in follow],
        f"Instructions: {DIETS.get(key, 'regular diet')}; {activity}. "
        f"Return to the emergency department for {RETURN_SIGNS[key]}.",
        pick(rng, ("Condition at discharge: stable.", "Condition at discharge: improved, ambulatory.",
                   "Discharged in stable condition.")) + code,
    ])
    summary = render_summary(rng, age, sex, facts)
    return DischargeRecord(id=rid, note=note, summary=summary, facts=facts)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def render_summary(rng: random.Random, age: int, sex: str, facts: Sequence[Fact]) -> str:
    """A 2-5 sentence summary naming every given fact verbatim, in one of a few clinical styles."""
    dx = [f.text for f in facts if f.kind == "diagnosis"]
    findings = [f.text for f in facts if f.kind == "finding"]
    procs = [f.text for f in facts if f.kind == "procedure"]
    meds = [f.text for f in facts if f.kind == "medication"]
    fu = [f.text for f in facts if f.kind == "follow_up"]
    lead = f"{age}-year-old {sex} admitted for {_join(dx)}" if dx else f"{age}-year-old {sex} hospitalized"
    inline = findings and not any(" with " in f for f in findings) and rng.random() < 0.5
    out = [lead + (f" with {_join(findings)}." if inline else ".")]
    if findings and not inline:
        out.append(pick(rng, ("Notable for {}.", "Key finding: {}.")).format(_join(findings)))
    if procs:
        out.append(pick(rng, ("Underwent {}.", "Procedures: {}.")).format(_join(procs)))
    if meds:
        out.append(pick(rng, ("Discharged on {}.", "Discharge medications: {}.")).format(", ".join(meds)))
    if fu:
        out.append(pick(rng, ("Follow-up: {}.", "Follow-up plan: {}.")).format(_join(fu)))
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------
# Rejected summaries for DPO: each one fails the rubric in one way a clinician would catch.


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
    name = _canonical(f.name, _record_vocab(r))
    stated = [m.dose for m in _mentions(clauses(r.note), _record_vocab(r)) if m.canonical == name and m.dose]
    bad = _wrong_amount(f.name, f.dose, stated, rng)
    facts = list(r.facts)
    facts[i] = f.model_copy(update={"text": f"{f.name} {bad}", "dose": bad})
    return render_summary(rng, *_age_sex(r), facts)


def invented_fact(r: DischargeRecord, rng: random.Random) -> str:
    """The summary plus a medication or diagnosis the note does not contain."""
    note = " " + " ".join(clauses(r.note)) + " "
    present = {m.canonical for m in _mentions(clauses(r.note), _record_vocab(r))}

    def absent(term: str, aliases: Sequence[str] = ()) -> bool:
        forms = [normalize(t) for t in (term, *aliases)]
        return forms[0] not in present and not any(f" {f} " in note for f in forms)

    if rng.random() < 0.5:
        drug = pick(rng, [m for m in sorted(MEDS) if absent(m, MEDS[m][1])])
        fact = Fact(kind="medication", text=f"{drug} {_dose(drug, rng)}", name=drug)
        return render_summary(rng, *_age_sex(r), [*r.facts, fact])
    dx = pick(rng, [d for d in ("acute kidney injury", "hyperkalemia", "delirium", "deep vein thrombosis",
                                "atrial fibrillation", "pneumonia", "myocardial infarction", "anemia")
                    if absent(d, DIAGNOSES.get(d, ()))])
    sentence = pick(rng, ("Course complicated by {}.", "Also treated for {}.", "New diagnosis of {}."))
    sentences = render_summary(rng, *_age_sex(r), r.facts).split(". ")
    sentences.insert(1, sentence.format(dx)[:-1])
    return ". ".join(sentences)


TASK = DischargeSummaryTask()
