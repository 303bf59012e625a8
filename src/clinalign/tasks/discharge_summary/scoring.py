"""How a summary is scored against its record: the rubric, the fact matcher (`assess`) and the metrics.

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
- Wrong demographics: the patient's age and sex stated in the summary must be the note's. The
  patient's age is the first "N-year-old", "N years old", "N yo", "N y/o", "aged N" or "age N" in
  the text; the sex is a man/woman/male/female/gentleman/lady/boy/girl word (or M/F) right after
  that age, else the first such word, else the pronouns (he/him/his or she/her, when only one kind occurs).
  A wrong age and a wrong sex are one false fact each; a summary that states neither is not judged
  on them (so an omitted age is neither recalled nor false), nor is one whose note states neither.
- Degenerate output: a non-empty answer that is not a summary at all is a failure, whatever words
  it happens to contain: no word of two or more letters (``777222``), a run of 12 or more digits,
  fewer than `MIN_WORDS` words, or repetition (a phrase of up to 8 words three times in a row, or,
  from 16 words on, fewer than half of its 4-word sequences distinct). It scores Likert 1, recall 0
  and one false fact: a reader handed it as a summary is misinformed, which the false-fact count
  must show (a model that loops on half the items cannot report "no false facts"). An empty answer
  states nothing: Likert 1, recall 0, no false fact.
- Likert: `likert_score` applies RUBRIC to the recall, the false-fact count and the word count.

Known limits, kept on purpose so scores stay explainable: keywords may be found in different
sentences; negation is a short cue list, not a parser; false facts are only detected for terms in
the vocabulary.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from clinalign.tasks.base import Metric, Prediction
from clinalign.tasks.discharge_summary.schema import DischargeRecord
from clinalign.tasks.discharge_summary.vocab import VOCAB

MAX_WORDS = 120  # a summary longer than this is not a summary (a copied note would otherwise score 5)
MIN_WORDS = 3  # fewer words than this cannot summarise a note ("Pneumonia." is a label, not a summary)

#: The 1-5 Likert anchors, once: `likert_score` is this text as arithmetic, and the rating app shows it
#: to clinicians (rate/db.py, the default rubric of a Likert campaign), so both scales mean the same.
RUBRIC = f"""Discharge summary rubric (1-5). Start at 5 and subtract one point per problem:
- omissions: 1 point if any key fact is missing (diagnosis, key finding, procedure, each discharge
  medication with its dose, follow-up); 2 if a quarter or more are missing; 3 if half or more are missing;
- 1 point for each false statement: a wrong dose for a discharge medication, a medication,
  diagnosis or procedure that is not in the note, or a wrong age or sex;
- 1 point if the summary runs past {MAX_WORDS} words.
5 = every key fact and nothing false: ready to use as written.
4 = one problem (one omission, one false statement, or too long): good, minor fixes.
3 = two problems (several omissions, or two false statements): a clinician must correct it.
2 = three problems: major omissions or errors.
1 = four or more problems, an empty summary, or output that is not a summary (repeated phrases,
  runs of digits, no words, fewer than {MIN_WORDS} words): unusable or unsafe."""


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


def mentions(cls: Sequence[str], extra: tuple[Entry, ...]) -> list[_Mention]:
    """Every known term in the clauses, with whether it is asserted and, for a drug, the dose after it."""
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


def record_vocab(record: DischargeRecord) -> tuple[Entry, ...]:
    """The record's own fact names join the vocabulary, so user data with other drugs works too."""
    extra = []
    for f in record.facts:
        if f.kind == "medication" and f.name:
            extra.append((f.name, "medication", tuple(f.aliases)))
        elif f.kind in ("diagnosis", "procedure"):
            extra.append((f.text, f.kind, tuple(f.aliases)))
    return tuple(sorted(extra))


def canonical(name: str, extra: tuple[Entry, ...]) -> str:
    """The normalised canonical name of a term (an alias maps to its drug, diagnosis or procedure)."""
    n = normalize(name)
    for entries in (extra, _VOCAB_ENTRIES):
        hit = _matcher(entries)[1].get(n)
        if hit:
            return hit[1]
    return n


_AGE = re.compile(r"\b(\d{1,3}) ?(?:years? old|yrs? old|yo|y o)\b|\b(?:aged?|age of) (\d{1,3})\b")
_SEX_WORDS = {"man": "male", "male": "male", "gentleman": "male", "boy": "male",
              "woman": "female", "female": "female", "lady": "female", "girl": "female"}
_SEX = re.compile(r"\b(" + "|".join(_SEX_WORDS) + r")\b")
_SEX_AFTER_AGE = re.compile(r"(" + "|".join(_SEX_WORDS) + r"|m|f)\b")  # "46 yo F"
_PRONOUNS = (re.compile(r"\b(he|him|his)\b"), re.compile(r"\b(she|her|hers)\b"))


def demographics(text: str) -> tuple[int | None, str | None]:
    """The patient's age and sex ("male" / "female") as the text states them, None where it does not
    (the rules are in the module docstring)."""
    t = normalize(text)
    age_m = _AGE.search(t)
    age = int(age_m.group(1) or age_m.group(2)) if age_m else None
    sex_m = _SEX_AFTER_AGE.match(t, age_m.end() + 1) if age_m else None
    sex_m = sex_m or _SEX.search(t)
    if sex_m:
        word = sex_m.group(1)
        return age, _SEX_WORDS.get(word, "male" if word == "m" else "female")
    he, she = (bool(p.search(t)) for p in _PRONOUNS)
    return age, ("male" if he else "female") if he != she else None


def degenerate(text: str) -> str | None:
    """Why a non-empty answer is not a summary at all ("no words", "digit run", "too short",
    "repetition"), or None for an empty answer or a real attempt at one."""
    if not text.strip():
        return None
    if not re.search(r"[^\W\d_]{2}", text):
        return "no words"
    if re.search(r"\d{12}", text):
        return "digit run"
    tokens = re.findall(r"[^\W_]+", text.lower())
    if len(tokens) < MIN_WORDS:
        return "too short"
    for n in range(1, 9):
        for i in range(len(tokens) - 3 * n + 1):
            if tokens[i:i + n] == tokens[i + n:i + 2 * n] == tokens[i + 2 * n:i + 3 * n]:
                return "repetition"
    grams = [tuple(tokens[i:i + 4]) for i in range(len(tokens) - 3)]
    if len(tokens) >= 16 and len(set(grams)) < len(grams) / 2:
        return "repetition"
    return None


@dataclass(frozen=True)
class Assessment:
    """What the rubric saw in one summary: the numbers and the reasons behind them. Shared by every
    caller that assesses the same (record, summary) (see `assess`), so never changed after it is made."""

    fact_recall: float
    missing: list[str] = field(default_factory=list)
    wrong_doses: list[str] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    wrong_demographics: list[str] = field(default_factory=list)  # "age", "sex"
    degenerate: str | None = None  # why the answer is not a summary at all (see `degenerate`)
    words: int = 0
    likert: int = 1

    @property
    def false_facts(self) -> int:
        return (len(self.wrong_doses) + len(self.invented) + len(self.wrong_demographics)
                + (self.degenerate is not None))


def likert_score(recall: float, false_facts: int, words: int) -> int:
    """The RUBRIC as arithmetic."""
    if words == 0:
        return 1
    omission = 0 if recall >= 1.0 else 1 if recall > 0.75 else 2 if recall > 0.5 else 3
    return max(1, 5 - omission - false_facts - (words > MAX_WORDS))


@dataclass(frozen=True)
class _Keyed:
    """A record as a cache key: what `assess` reads of it (the note and the facts), not its id."""

    key: tuple[str, tuple[tuple[object, ...], ...]]
    record: DischargeRecord = field(compare=False, hash=False)


def assess(record: DischargeRecord, summary: str | None) -> Assessment:
    """Score one summary against its record's key facts and note (rules in the module docstring).

    Runs once per (record, summary): the study's three metrics, their per-item values for the paired
    tests and the on-policy judge all read this one result, so matching is not redone per metric."""
    facts = tuple((f.kind, f.text, f.name, f.dose, tuple(f.aliases)) for f in record.facts)
    return _assess(_Keyed((record.note, facts), record), summary or "")


@lru_cache(maxsize=65536)
def _assess(keyed: _Keyed, text: str) -> Assessment:
    record = keyed.record
    words = len(text.split())
    if why := degenerate(text):
        return Assessment(0.0, [f.text for f in record.facts], degenerate=why, words=words, likert=1)
    extra = record_vocab(record)
    s_clauses = clauses(text)
    s_words = set(" ".join(s_clauses).split())
    s_mentions = mentions(s_clauses, extra)
    n_clauses = clauses(record.note)
    n_mentions = mentions(n_clauses, extra)
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
            name = canonical(f.name or f.text, extra)
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
    stated, told = demographics(text), demographics(record.note)
    wrong_demo = [name for name, s, n in zip(("age", "sex"), stated, told, strict=True)
                  if s is not None and n is not None and s != n]
    recall = 1 - len(missing) / len(record.facts)
    a = Assessment(recall, missing, wrong, invented, wrong_demo, words=words)
    return replace(a, likert=likert_score(recall, a.false_facts, words))


def score_summary(record: DischargeRecord, summary: str | None) -> dict[str, float]:
    """fact_recall, false_facts, wrong_doses, invented_facts and likert of one summary."""
    a = assess(record, summary)
    return {"fact_recall": a.fact_recall, "false_facts": float(a.false_facts), "wrong_doses": float(len(a.wrong_doses)),
            "invented_facts": float(len(a.invented)), "likert": float(a.likert)}


def metrics() -> tuple[Metric, ...]:
    """Likert (the primary metric), fact recall and false facts: per-item means, Wilcoxon-tested."""

    def metric(key: str, higher_is_better: bool, covers: str) -> Metric:
        def per_item(r: DischargeRecord, p: Prediction) -> float:
            return score_summary(r, p)[key]

        def compute(recs: Sequence[DischargeRecord], preds: Sequence[Prediction]) -> float:
            vals = [per_item(r, p) for r, p in zip(recs, preds, strict=True)]
            return sum(vals) / len(vals) if vals else float("nan")

        return Metric(key, "wilcoxon", compute, per_item=per_item, higher_is_better=higher_is_better,
                      mean=True, covers=covers)

    return (
        metric("likert", True,
               "the rubric's 1-5 grade, a deterministic rule standing in for clinicians: 5 minus omitted key "
               "facts, each false fact and excess length; empty or degenerate output is 1. Not: style, "
               "readability, or errors about things outside the key facts and the known vocabulary."),
        metric("fact_recall", True,
               "share of the note's key facts (diagnosis, findings, procedures, each discharge medication "
               "with its dose, follow-up) the summary states, matched by keywords and dose; degenerate "
               "output is 0. Not: whether a fact's words sit in the right sentence; age and sex."),
        metric("false_facts", False,
               "false statements per summary: wrong doses of listed medications, medications, diagnoses "
               "or procedures from the known vocabulary that the note lacks, a wrong age or sex, and one "
               "for degenerate output (repetition, digit runs, no words, too short). Not: false lab "
               "values, dates or findings, or terms outside the vocabulary."),
    )
