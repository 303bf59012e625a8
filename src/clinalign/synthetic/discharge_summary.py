"""Synthetic discharge notes: each admission type writes its own HPI, course, procedures and findings;
the key facts are kept beside the note, and the reference summary is rendered from them
(`clinalign.tasks.discharge_summary.summaries.render_summary`). Output is fixed by the seed."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clinalign.synthetic.common import distinct_records
from clinalign.tasks.discharge_summary.schema import DischargeRecord, Fact
from clinalign.tasks.discharge_summary.scoring import normalize
from clinalign.tasks.discharge_summary.summaries import join_phrases, render_summary
from clinalign.tasks.discharge_summary.vocab import MEDS, PROCEDURES
from clinalign.tasks.text import pick


def generate(n: int, seed: int) -> list[DischargeRecord]:
    rng = random.Random(seed)
    return distinct_records(n, lambda i: make_record(rng, f"dc-{i + 1:06d}"), key=lambda r: r.note)


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


def _dose(med: str, rng: random.Random, adm: _Admission) -> str:
    """A usual dose of ``med``, or one of the doses this indication uses."""
    return pick(rng, adm.doses.get(med) or MEDS[med][0])


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
        f"HPI: {age}-year-old {sex} with {pick(rng, ('a history of ', ''))}{join_phrases(comorbid)} who {hpi_open} "
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
