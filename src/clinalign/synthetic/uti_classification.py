"""Synthetic UTI passages: a case (the clinical facts) is drawn first, then written as one of four
kinds of note.

The cases cover the labelling rule in `clinalign.tasks.uti_classification` from both sides: four
infections of the urinary tract (cystitis, catheter-associated UTI, pyelonephritis, urosepsis) and the
look-alikes a keyword matcher gets wrong (dysuria from an STI or vaginitis, asymptomatic bacteriuria, a
contaminated culture, an infection elsewhere, a kidney stone). The label is the case's, never read
back from the text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from clinalign.synthetic.common import PATIENT_NAMES, distinct_records, maybe, sentences, typo
from clinalign.tasks.text import pick
from clinalign.tasks.uti_classification import UtiRecord

NOTE_TYPES = ("nursing note", "ED note", "discharge excerpt", "patient message")


@dataclass
class _Case:
    kind: str
    label: Literal["yes", "no"]
    age: int
    sex: Literal["F", "M"]
    setting: Literal["outpatient", "ED", "inpatient"]
    days: int  # symptom duration
    complaints: list[str]
    lay: list[str]  # the same complaints in a patient's words
    febrile: bool = False
    hr: int = 80
    sbp: int = 0  # 0: normal, drawn when rendered
    spo2: int = 0
    reason: str = ""  # why the patient presented, when not the complaints themselves
    history: str = ""  # one sentence of relevant history
    wbc: float | None = None
    ua: str = ""
    culture: str = ""
    other_tests: list[str] = field(default_factory=list)
    exam: str = ""
    assessment: str = ""
    lay_dx: str = ""  # what the patient was told
    plan: str = ""
    lay_plan: str = ""


ORGANISMS_COMMON = ("Escherichia coli", "E. coli", "Klebsiella pneumoniae", "Proteus mirabilis")
ORGANISMS_CAUTI = ("Pseudomonas aeruginosa", "Enterococcus faecalis", "Klebsiella pneumoniae", "E. coli")
CYSTITIS_RX = (
    ("nitrofurantoin 100 mg PO BID x 5 days", "nitrofurantoin 100 mg twice a day for 5 days"),
    ("TMP-SMX DS 1 tab PO BID x 3 days", "Bactrim DS twice a day for 3 days"),
    ("fosfomycin 3 g PO once", "a single packet of fosfomycin"),
    ("cephalexin 500 mg PO BID x 7 days", "cephalexin 500 mg twice daily for a week"),
)
FOLEY_WHY = ("urinary retention", "strict output monitoring", "sacral wound", "neurogenic bladder")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _temp(rng: random.Random, febrile: bool) -> float:
    return round(rng.uniform(38.1, 39.8) if febrile else rng.uniform(36.3, 37.4), 1)


def _cfu(rng: random.Random, high: bool = True) -> str:
    if high:
        return pick(rng, (">100,000 CFU/mL", "≥100,000 CFU/mL", ">10^5 CFU/mL", "100,000 CFU/mL"))
    return pick(rng, ("10,000-50,000 CFU/mL", "<10,000 CFU/mL", "20,000 CFU/mL", "30,000 CFU/mL"))


def _ua_positive(rng: random.Random) -> str:
    le = pick(rng, ("2+", "3+", "large", "moderate"))
    nit = pick(rng, ("positive", "positive", "negative"))
    return (f"UA: leukocyte esterase {le}, nitrite {nit}, WBC {rng.randint(25, 180)}/hpf, "
            f"RBC {rng.randint(2, 40)}/hpf, {pick(rng, ('many', 'moderate', '3+'))} bacteria")


def _ua_bland(rng: random.Random) -> str:
    return (f"UA: leukocyte esterase {pick(rng, ('negative', 'trace'))}, nitrite negative, "
            f"WBC {rng.randint(0, 4)}/hpf, RBC {rng.randint(0, 3)}/hpf, no bacteria")


def _cystitis(rng: random.Random) -> _Case:
    sex = "F" if rng.random() < 0.85 else "M"
    org = pick(rng, (*ORGANISMS_COMMON, "Staphylococcus saprophyticus") if sex == "F" else ORGANISMS_COMMON)
    rx, lay_rx = pick(rng, CYSTITIS_RX)
    c = rng.sample(["dysuria", "urinary frequency", "urgency", "suprapubic pain", "gross hematuria",
                    "cloudy urine"], k=rng.randint(2, 4))
    lay = rng.sample(["it burns when I pee", "I'm going to the bathroom every 20 minutes",
                      "I keep feeling like I have to go", "there's pressure low in my belly",
                      "my urine is cloudy and smells strong", "I saw a little blood in my urine"], k=rng.randint(2, 3))
    return _Case("cystitis", "yes", rng.randint(19, 84), sex, pick(rng, ("outpatient", "ED")), rng.randint(1, 5),
                 c, lay, hr=rng.randint(70, 98), ua=_ua_positive(rng),
                 culture=f"urine culture grew {_cfu(rng)} {org}",
                 exam=pick(rng, ("suprapubic tenderness, no CVA tenderness", "mild suprapubic tenderness",
                                 "abdomen soft, suprapubic tenderness to palpation, no flank tenderness")),
                 assessment=pick(rng, ("acute cystitis", "acute uncomplicated cystitis", "lower urinary tract infection",
                                       "UTI (cystitis)")),
                 lay_dx=pick(rng, ("a bladder infection", "a UTI", "a urinary tract infection")),
                 plan=f"started {rx}", lay_plan=f"they started me on {lay_rx}")


def _cauti(rng: random.Random) -> _Case:
    fd = rng.randint(4, 21)
    org = pick(rng, ORGANISMS_CAUTI)
    drug = pick(rng, ("ceftriaxone 1 g IV q24h", "cefepime 1 g IV q12h", "piperacillin-tazobactam 4.5 g IV q6h"))
    c = rng.sample(["fever", "new confusion", "cloudy foul-smelling urine in the Foley bag", "suprapubic discomfort",
                    "rigors", "decreased urine output"], k=rng.randint(2, 4))
    return _Case("cauti", "yes", rng.randint(58, 94), pick(rng, ("F", "M")), "inpatient", rng.randint(1, 2), c,
                 ["she's been more confused", "the catheter bag looks cloudy", "she has a fever"],
                 febrile=True, hr=rng.randint(96, 124), wbc=round(rng.uniform(11.5, 19.8), 1),
                 ua=_ua_positive(rng), culture=f"urine culture from the catheter grew {_cfu(rng)} {org}",
                 other_tests=[pick(rng, ("CXR clear", "chest X-ray without infiltrate", "no other source of fever found"))],
                 exam="indwelling Foley catheter in place, suprapubic tenderness",
                 assessment=pick(rng, ("catheter-associated UTI (CAUTI)", "CAUTI", "catheter-associated urinary tract infection")),
                 lay_dx="a urinary infection from the catheter",
                 plan=f"Foley exchanged, {drug} started", lay_plan="they changed the catheter and started IV antibiotics",
                 history=f"Indwelling Foley catheter for {fd} days ({pick(rng, FOLEY_WHY)}).")


def _pyelo(rng: random.Random) -> _Case:
    side = pick(rng, ("right", "left"))
    org = pick(rng, ORGANISMS_COMMON)
    c = ["fever", f"{side} flank pain", *rng.sample(["dysuria", "nausea", "vomiting", "chills", "urinary frequency"],
                                                  k=rng.randint(1, 3))]
    oral = pick(rng, ("ciprofloxacin 500 mg PO BID x 7 days", "levofloxacin 750 mg PO daily x 5 days",
                      "TMP-SMX DS PO BID x 14 days"))
    other = [maybe(rng, 0.5, f"CT abdomen/pelvis: {side} perinephric stranding, no hydronephrosis or stone")]
    return _Case("pyelonephritis", "yes", rng.randint(18, 79), "F" if rng.random() < 0.8 else "M", "ED",
                 rng.randint(1, 4), c, [f"my {side} side/back is killing me", "I've had fevers and chills",
                                        "it hurts when I pee", "I threw up twice"],
                 febrile=True, hr=rng.randint(98, 126), wbc=round(rng.uniform(12.0, 21.5), 1), ua=_ua_positive(rng),
                 culture=f"urine culture grew {_cfu(rng)} {org}", other_tests=[o for o in other if o],
                 exam=f"{side} CVA tenderness",
                 assessment=pick(rng, ("acute pyelonephritis", f"{side} pyelonephritis", "upper urinary tract infection (pyelonephritis)")),
                 lay_dx="a kidney infection", plan=f"ceftriaxone 1 g IV, then {oral}",
                 lay_plan="I got IV antibiotics and went home on pills")


def _urosepsis(rng: random.Random) -> _Case:
    org = pick(rng, ORGANISMS_COMMON)
    lactate = round(rng.uniform(2.2, 5.4), 1)
    drug = pick(rng, ("piperacillin-tazobactam 4.5 g IV q6h", "cefepime 2 g IV q8h", "meropenem 1 g IV q8h"))
    c = rng.sample(["fever", "rigors", "altered mental status", "dysuria", "decreased oral intake", "lethargy"],
                   k=rng.randint(2, 4))
    return _Case("urosepsis", "yes", rng.randint(62, 95), pick(rng, ("F", "M")), "inpatient", rng.randint(1, 3), c,
                 ["my father got very confused and had a high fever", "he had burning with urination"],
                 febrile=True, hr=rng.randint(108, 138), sbp=rng.randint(72, 92), wbc=round(rng.uniform(14.0, 26.0), 1),
                 ua=_ua_positive(rng),
                 culture=f"urine and 2/2 blood cultures grew {org} (urine {_cfu(rng)})",
                 other_tests=[f"lactate {lactate} mmol/L"],
                 exam=pick(rng, ("ill-appearing, suprapubic tenderness", "lethargic, dry mucous membranes, CVA tenderness")),
                 assessment=pick(rng, ("sepsis secondary to urinary tract infection (urosepsis)", "urosepsis",
                                       "septic shock from a urinary source")),
                 lay_dx="sepsis from a urinary tract infection",
                 plan=f"30 mL/kg IV fluid bolus, {drug}", lay_plan="he was admitted for IV antibiotics and fluids")


def _sti(rng: random.Random) -> _Case:
    sex = pick(rng, ("F", "M"))
    bug = pick(rng, ("Chlamydia trachomatis", "Neisseria gonorrhoeae", "chlamydia"))
    discharge = "urethral discharge" if sex == "M" else "vaginal discharge"
    return _Case("sti", "no", rng.randint(17, 38), sex, pick(rng, ("outpatient", "ED")), rng.randint(2, 10),
                 ["dysuria", discharge],
                 ["it burns when I pee", "I've noticed some discharge"],
                 hr=rng.randint(64, 92), ua=f"UA: leukocyte esterase trace, nitrite negative, WBC {rng.randint(5, 15)}/hpf",
                 culture="urine culture: no growth at 48 hours",
                 other_tests=[f"NAAT positive for {bug}"], exam=pick(rng, ("no CVA tenderness", "afebrile, abdomen benign")),
                 assessment=f"{'urethritis' if sex == 'M' else 'cervicitis'} due to {bug}; urine culture negative, not a UTI",
                 lay_dx="chlamydia, not a bladder infection" if "hlamydia" in bug else "gonorrhea, not a UTI",
                 plan="ceftriaxone 500 mg IM once and doxycycline 100 mg PO BID x 7 days; partner notification",
                 lay_plan="I got a shot and doxycycline for a week and have to tell my partner",
                 history=f"Reports a new sexual partner {rng.randint(2, 8)} weeks ago.")


def _vaginitis(rng: random.Random) -> _Case:
    kind, rx = pick(rng, (("vulvovaginal candidiasis", "fluconazole 150 mg PO once"),
                          ("bacterial vaginosis", "metronidazole 500 mg PO BID x 7 days"),
                          ("trichomoniasis", "metronidazole 500 mg PO BID x 7 days")))
    finding = {"vulvovaginal candidiasis": "budding yeast on KOH prep", "bacterial vaginosis": "clue cells on wet mount",
               "trichomoniasis": "motile trichomonads on wet mount"}[kind]
    return _Case("vaginitis", "no", rng.randint(18, 55), "F", "outpatient", rng.randint(2, 12),
                 ["external burning with urination", "vaginal itching", "abnormal vaginal discharge"],
                 ["it stings on the outside when I pee", "I'm really itchy down there"],
                 hr=rng.randint(62, 90), ua=_ua_bland(rng), culture="urine culture: no growth",
                 other_tests=[finding], exam="vulvar erythema, no suprapubic or CVA tenderness",
                 assessment=f"{kind}; dysuria is external, no evidence of UTI", lay_dx=f"{kind}, not a UTI",
                 plan=f"{rx}", lay_plan=f"they prescribed {rx.split(' PO')[0]}")


def _abu(rng: random.Random) -> _Case:
    org = pick(rng, ORGANISMS_COMMON)
    reason, why, setting = pick(rng, (
        ("pre-operative evaluation before elective hip surgery; no urinary symptoms",
         "sent as part of a routine pre-operative screen", "outpatient"),
        ("a fall without injury; no fever or urinary complaints", "sent as part of the fall workup", "outpatient"),
        ("a routine diabetes visit; denies dysuria, frequency, fever or flank pain",
         "sent with the routine diabetes labs", "outpatient"),
        ("admission for a COPD exacerbation; no urinary symptoms", "sent by protocol on admission", "inpatient"),
        ("long-term care resident at baseline; no fever, dysuria or change in mental status",
         "collected at the nursing facility without an indication", "inpatient"),
    ))
    return _Case("asymptomatic_bacteriuria", "no", rng.randint(66, 96), pick(rng, ("F", "F", "M")),
                 setting, 0, [],
                 ["I feel completely fine, no burning or anything"], hr=rng.randint(60, 88),
                 ua=f"UA: leukocyte esterase {pick(rng, ('1+', '2+', 'trace'))}, nitrite {pick(rng, ('positive', 'negative'))}",
                 culture=f"urine culture ({why}) grew {_cfu(rng)} {org}",
                 exam="no suprapubic or CVA tenderness; at baseline mental status",
                 reason=reason,
                 assessment=pick(rng, ("asymptomatic bacteriuria; no treatment indicated",
                                       "asymptomatic bacteriuria, not a UTI - antibiotics not indicated per IDSA guidance")),
                 lay_dx="bacteria in the urine that doesn't need treatment since I have no symptoms",
                 plan="no antibiotics; monitor for urinary symptoms", lay_plan="no antibiotics for now")


def _contaminated(rng: random.Random) -> _Case:
    why = pick(rng, ("for vague abdominal discomfort", "as part of a fall workup", "for lower back pain after lifting"))
    return _Case("contaminated_culture", "no", rng.randint(20, 88), pick(rng, ("F", "M")),
                 pick(rng, ("outpatient", "ED")), rng.randint(1, 6), [],
                 ["I don't have any burning", "they tested my urine anyway"], hr=rng.randint(60, 92),
                 ua=f"UA: {rng.randint(20, 45)} squamous epithelial cells/hpf, leukocyte esterase trace, nitrite negative",
                 culture=f"urine culture: {_cfu(rng, high=False)} mixed flora ({rng.randint(3, 4)} organisms), likely contamination",
                 exam="afebrile, no suprapubic or CVA tenderness",
                 reason=f"evaluation {why}; denies dysuria or frequency",
                 assessment="contaminated urine specimen; no evidence of UTI",
                 lay_dx="a contaminated sample and not an infection",
                 plan="no antibiotics; repeat clean-catch only if urinary symptoms develop",
                 lay_plan="no antibiotics unless I get symptoms")


def _other_infection(rng: random.Random) -> _Case:
    if rng.random() < 0.5:
        lobe = pick(rng, ("right lower lobe", "left lower lobe", "right middle lobe"))
        return _Case("pneumonia", "no", rng.randint(35, 92), pick(rng, ("F", "M")), pick(rng, ("ED", "inpatient")),
                     rng.randint(2, 6), ["productive cough", "fever", "shortness of breath"],
                     ["I can't stop coughing", "I've had a fever"], febrile=True, hr=rng.randint(94, 118),
                     wbc=round(rng.uniform(11.0, 18.5), 1), ua=_ua_bland(rng), culture="urine culture: no growth",
                     other_tests=[f"CXR: {lobe} consolidation"], spo2=rng.randint(88, 93),
                     exam=f"crackles over the {lobe}", assessment=f"community-acquired pneumonia ({lobe})",
                     lay_dx="pneumonia", plan="ceftriaxone 1 g IV daily plus azithromycin 500 mg daily",
                     lay_plan="antibiotics for pneumonia")
    leg = pick(rng, ("left lower leg", "right lower leg", "left forearm"))
    return _Case("cellulitis", "no", rng.randint(25, 85), pick(rng, ("F", "M")), pick(rng, ("ED", "inpatient")),
                 rng.randint(2, 5), [f"{leg} redness, warmth and swelling", "fever"],
                 [f"my {leg.split()[-1]} is red, hot and swollen"], febrile=rng.random() < 0.6, hr=rng.randint(80, 112),
                 wbc=round(rng.uniform(10.5, 16.0), 1), ua=_ua_bland(rng), culture="",
                 other_tests=[f"erythema {rng.randint(6, 18)} x {rng.randint(4, 12)} cm, margins marked"],
                 exam=f"{leg} erythema and warmth, no fluctuance", assessment=f"nonpurulent cellulitis of the {leg}",
                 lay_dx="cellulitis, a skin infection", plan=pick(rng, ("cefazolin 2 g IV q8h", "cephalexin 500 mg PO QID x 5 days")),
                 lay_plan="antibiotics for the skin infection")


def _stone(rng: random.Random) -> _Case:
    side = pick(rng, ("right", "left"))
    mm = rng.randint(3, 7)
    where = pick(rng, ("ureterovesical junction", "proximal ureter", "distal ureter"))
    return _Case("kidney_stone", "no", rng.randint(24, 70), pick(rng, ("F", "M", "M")), "ED", rng.randint(0, 2),
                 [f"colicky {side} flank pain radiating to the groin", "nausea", "hematuria"],
                 [f"sudden stabbing pain in my {side} side that goes down to my groin", "my urine looked pink"],
                 hr=rng.randint(78, 108), wbc=round(rng.uniform(6.0, 10.5), 1),
                 ua=f"UA: RBC {rng.randint(20, 100)}/hpf, WBC {rng.randint(0, 4)}/hpf, leukocyte esterase negative, nitrite negative",
                 culture="urine culture: no growth",
                 other_tests=[f"CT: {mm} mm obstructing stone at the {side} {where} with mild hydronephrosis"],
                 exam=f"{side} CVA tenderness, writhing in discomfort",
                 assessment=f"{side} ureterolithiasis without evidence of infection",
                 lay_dx=f"a {mm} mm kidney stone, no infection",
                 plan="tamsulosin 0.4 mg PO daily, ketorolac 15 mg IV, strain urine; urology follow-up",
                 lay_plan="pain medicine and tamsulosin to help pass it")


POSITIVE_CASES: tuple[Callable[[random.Random], _Case], ...] = (_cystitis, _cauti, _pyelo, _urosepsis)
NEGATIVE_CASES: tuple[Callable[[random.Random], _Case], ...] = (
    _sti, _vaginitis, _abu, _contaminated, _other_infection, _stone)
POSITIVE_SHARE = 0.45


def _vitals(rng: random.Random, c: _Case) -> str:
    t = _temp(rng, c.febrile)
    temp = f"T {t} C" if rng.random() < 0.6 else f"T {t * 9 / 5 + 32:.1f} F"
    sbp = c.sbp or rng.randint(106, 152)
    dbp = round(sbp * rng.uniform(0.5, 0.66))
    return f"{temp}, HR {c.hr}, BP {sbp}/{dbp}, RR {rng.randint(14, 24)}, SpO2 {c.spo2 or rng.randint(94, 99)}% RA"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _presents(c: _Case) -> str:
    if c.reason:
        return c.reason
    if len(c.complaints) == 1:
        return c.complaints[0]
    return ", ".join(c.complaints[:-1]) + " and " + c.complaints[-1]


def _who(c: _Case, short: bool) -> str:
    sex = c.sex if short else {"F": "woman", "M": "man"}[c.sex]
    return f"{c.age} y/o {sex}" if short else f"{c.age}-year-old {sex}"


def _nursing(rng: random.Random, c: _Case) -> str:
    shift = pick(rng, ("0700-1900", "1900-0700", "day shift", "night shift"))
    header = "Clinic nursing note" if c.setting == "outpatient" else f"Nursing note ({shift})"
    article = "an" if str(c.age).startswith("8") or c.age in (11, 18) else "a"
    return sentences(
        f"{header}: Pt is {article} {_who(c, True)}.",
        f"Seen for {c.reason}." if c.reason else f"Pt c/o {_presents(c)}.",
        c.history,
        f"VS: {_vitals(rng, c)}.",
        f"Assessment: {c.exam}.",
        pick(rng, (f"Results reviewed: {c.ua}.", f"{c.ua}.")),
        f"{_cap(c.culture)}." if c.culture else "",
        _cap("; ".join(c.other_tests)) + "." if c.other_tests else "",
        f"Per provider: {c.assessment}.",
        f"Plan: {c.plan}.",
        pick(rng, ("Will continue to monitor.", "Call light within reach, will reassess.", "Pt verbalized understanding.")),
    )


def _ed(rng: random.Random, c: _Case) -> str:
    labs = [c.ua]
    if c.wbc is not None:
        labs.insert(0, f"WBC {c.wbc} K/uL")
    if c.setting == "inpatient" or c.kind == "urosepsis":
        dispo = "admitted"
    elif c.kind in ("pyelonephritis", "pneumonia", "cellulitis"):
        dispo = pick(rng, ("discharged home", "admitted to medicine", "placed in observation"))
    elif c.kind == "kidney_stone":
        dispo = pick(rng, ("discharged home", "admitted for pain control"))
    else:
        dispo = pick(rng, ("discharged home", "discharged home with PCP follow-up"))
    dur = "today" if c.days == 0 else f"{c.days} day{'s' if c.days > 1 else ''}"
    return sentences(
        f"ED note. HPI: {_who(c, rng.random() < 0.5)} presents with {_presents(c)}"
        f"{'' if c.reason else f' ({dur})'}.",
        c.history,
        f"Vitals: {_vitals(rng, c)}.",
        f"Exam: {c.exam}.",
        f"Labs: {'; '.join(labs)}.",
        _cap("; ".join(c.other_tests)) + "." if c.other_tests else "",
        f"{_cap(c.culture)} (resulted after ED visit)." if c.culture else "",
        f"Impression: {c.assessment}.",
        f"Plan: {c.plan}; {dispo}.",
    )


def _discharge(rng: random.Random, c: _Case) -> str:
    los = rng.randint(2, 9)
    pron = "She" if c.sex == "F" else "He"
    return sentences(
        f"Discharge summary (excerpt). {_cap(_who(c, False))} admitted for {los} days"
        + (f" ({c.reason})." if c.reason else f" with {_presents(c)}."),
        c.history,
        f"On arrival: {_vitals(rng, c)}." + (f" WBC {c.wbc}." if c.wbc is not None else ""),
        f"{c.ua}.",
        f"{_cap(c.culture)}." if c.culture else "",
        _cap("; ".join(c.other_tests)) + "." if c.other_tests else "",
        f"Hospital course: {_cap(c.plan)}; {pron.lower()} improved.",
        f"Discharge diagnosis: {c.assessment}.",
        pick(rng, ("Follow up with PCP in 1 week.", f"PCP follow-up on {pick(rng, WEEKDAYS)}.",
                   "Return precautions reviewed.")),
    )


def _message(rng: random.Random, c: _Case) -> str:
    """A patient portal message: lay words, the diagnosis as the patient understood it, a question."""
    dur = pick(rng, ("since yesterday", f"for {max(c.days, 2)} days", "since the weekend",
                     f"since {pick(rng, WEEKDAYS)}", "for a couple of days", "on and off this week"))
    where = pick(rng, ("urgent care", "the ER", "the clinic", "the walk-in clinic", *(("my OB/GYN",) * (c.sex == "F"))))
    when = pick(rng, (f"on {pick(rng, WEEKDAYS)}", "yesterday", f"{rng.randint(2, 6)} days ago", "last night", ""))
    told = pick(rng, (f"I was seen at {where} {when} and they told me it was {c.lay_dx}",
                      f"I went to {where} {when} and was told it's {c.lay_dx}",
                      f"{_cap(where)} {when} said it was {c.lay_dx}"))
    if c.ua and c.label == "yes":
        urine = "showed an infection"
    elif c.kind in ("asymptomatic_bacteriuria", "contaminated_culture"):
        urine = "showed nothing that needs antibiotics"
    else:
        urine = "was normal"
    temp = _temp(rng, c.febrile) * 9 / 5 + 32
    body = sentences(
        pick(rng, ("Hi,", "Hello,", "Good morning,", "Hi there,", "Hi Dr. [CLINICIAN],", "To the care team:", "")),
        maybe(rng, 0.3, f"I'm {c.age} years old."),
        f"{_cap('; '.join(rng.sample(c.lay, k=min(len(c.lay), rng.randint(1, 2)))))}{f' {dur}' if c.days else ''}.",
        f"{told}.",
        maybe(rng, 0.5, f"My temperature {pick(rng, ('was', 'has been', 'got up to'))} {temp:.1f} this morning."),
        maybe(rng, 0.4, f"The {pick(rng, ('lab', 'nurse', 'doctor', 'PA'))} said the urine test {urine}."),
        f"{_cap(c.lay_plan)}.",
        pick(rng, ("Is that right?", "Should I do anything else?", "Just wanted you to know.",
                   f"Can I still go to work on {pick(rng, WEEKDAYS)}?", "Do I need a follow-up visit?",
                   "Please let me know if you need anything from me.", "Is it ok to take ibuprofen with this?",
                   "When should I start feeling better?")),
        pick(rng, ("Thanks,", "Thank you,", "-", "Best,", "Thanks so much,")) + " " + pick(rng, PATIENT_NAMES),
    )
    return typo(rng, re.sub(r"\s+([.,])|\s{2,}", lambda m: m.group(1) or " ", body), 0.3)


RENDERERS = {"nursing note": _nursing, "ED note": _ed, "discharge excerpt": _discharge, "patient message": _message}


ADMITTED_KINDS = ("pyelonephritis", "urosepsis", "cauti", "pneumonia", "cellulitis", "kidney_stone")


def _note_type(rng: random.Random, c: _Case) -> str:
    """Only notes that fit the case: no discharge summary for an office visit, no ED note for a pre-op screen."""
    if c.setting == "inpatient":
        return pick(rng, ("nursing note", "discharge excerpt", "discharge excerpt", "ED note"))
    if c.setting == "outpatient":
        return pick(rng, ("patient message", "nursing note", *(("ED note",) * ("routine" not in c.reason
                                                                              and "pre-op" not in c.reason))))
    if c.kind in ADMITTED_KINDS:
        return pick(rng, NOTE_TYPES)
    return pick(rng, ("nursing note", "ED note", "patient message"))


def generate(n: int, seed: int) -> list[UtiRecord]:
    rng = random.Random(seed)

    def draw(i: int) -> UtiRecord:
        pool = POSITIVE_CASES if rng.random() < POSITIVE_SHARE else NEGATIVE_CASES
        case = pick(rng, pool)(rng)
        note_type = _note_type(rng, case)
        return UtiRecord(id=f"uti-{i + 1:06d}", text=RENDERERS[note_type](rng, case), label=case.label,
                         note_type=note_type)

    return distinct_records(n, draw, key=lambda r: r.text)
