"""Synthetic patient portal messages: a (personnel, urgency) cell is drawn, then a message is written
from that cell's scenarios and wrapped in the openers, background, details and sign-offs real
messages carry.

The scenarios follow the labelling rule in `clinalign.tasks.message_triage`, including its
look-alike pairs (a week of insulin left vs out of it; a post-operative temperature either side of
100.4 F; home blood pressure either side of the urgent line), and the background sentences are drawn
the same way for every label so that no word gives the label away.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from clinalign.synthetic.common import (
    PATIENT_NAMES,
    distinct_records,
    lowercase_casual,
    maybe,
    sentences,
    typo,
)
from clinalign.tasks.message_triage import PERSONNEL, URGENCY, TriageRecord
from clinalign.tasks.text import pick

# --------------------------------------------------------------------------------------------------
# Vocabulary

ROUTINE_MEDS = ("lisinopril 10 mg", "atorvastatin 40 mg", "metformin 500 mg", "levothyroxine 75 mcg",
                "sertraline 50 mg", "amlodipine 5 mg", "omeprazole 20 mg", "losartan 50 mg", "montelukast 10 mg",
                "gabapentin 300 mg", "rosuvastatin 10 mg", "escitalopram 10 mg", "tamsulosin 0.4 mg",
                "hydrochlorothiazide 25 mg", "pantoprazole 40 mg", "bupropion XL 150 mg")
CRITICAL_MEDS = ("insulin glargine", "my insulin (Humalog)", "levetiracetam 500 mg", "apixaban 5 mg",
                 "tacrolimus 1 mg", "lamotrigine 100 mg", "Eliquis", "my seizure medicine (Keppra)")
HIGH_RISK_MEDS = ("warfarin 5 mg", "metoprolol 50 mg", "glipizide 10 mg", "clonidine 0.1 mg", "lithium 300 mg",
                  "oxycodone 5 mg", "amitriptyline 25 mg")
PHARMACIES = ("the CVS on Main", "Walgreens", "my mail-order pharmacy", "the pharmacy downstairs", "Rite Aid",
              "the Costco pharmacy", "the hospital outpatient pharmacy")
PROCEDURES = ("knee replacement", "gallbladder surgery", "hernia repair", "C-section", "hip replacement",
              "carpal tunnel release", "shoulder arthroscopy", "hysterectomy", "appendectomy", "thyroid surgery")
RELATIVES = ("my husband", "my wife", "my mom", "my dad", "my son", "my daughter", "my partner")
TIMES = ("this morning", "last night", "about an hour ago", "since lunch", "today", "this afternoon")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
OPENERS = ("Hi,", "Hello,", "Good morning,", "Hi there,", "Hi Dr. [CLINICIAN],", "Hello care team,", "",
           "To whoever reads this,", "Hey,", "Good afternoon,")
SIGNOFFS = ("Thanks,", "Thank you,", "-", "Thanks so much,", "Best,", "Regards,", "Thank you for your help,")


def _temp(rng: random.Random, lo: float = 100.4, hi: float = 103.2) -> str:
    return f"{rng.uniform(lo, hi):.1f}"


def _when(rng: random.Random) -> str:
    return pick(rng, (f"on {pick(rng, WEEKDAYS)}", f"{rng.randint(2, 9)} days ago", "last week", "yesterday"))


# --------------------------------------------------------------------------------------------------
# Scenarios: each returns the core of a message; the labels come from the scenario's place in the table.

Scenario = Callable[[random.Random], str]


def _fd_routine(rng: random.Random) -> str:
    return pick(rng, (
        f"I need to schedule my {pick(rng, ('6-month', 'annual', '3-month', 'yearly'))} follow-up. "
        f"{pick(rng, ('Mornings work best', 'I can only do afternoons', 'Any day but Wednesday is fine'))}.",
        f"Can I move my appointment on {pick(rng, WEEKDAYS)} the {rng.randint(3, 28)}th to the following week? "
        f"{pick(rng, ('I have a work conflict', 'my ride fell through', 'I will be out of town'))}.",
        f"I got a bill for ${rng.randint(45, 900)}.{rng.randint(10, 99)} for my visit in "
        f"{pick(rng, ('March', 'April', 'June', 'August', 'October'))} but I thought my insurance covered it.",
        f"My employer needs the {pick(rng, ('FMLA', 'short-term disability', 'return to work'))} paperwork filled out "
        f"by the {rng.randint(10, 30)}th. Where do I drop off the form?",
        f"Could you send my records from the last {rng.randint(2, 5)} years to my new "
        f"{pick(rng, ('cardiologist', 'primary care office', 'dentist', 'orthopedist'))}?",
        f"I can't log into the portal on my phone, it keeps saying {pick(rng, ('password expired', 'account locked'))}.",
        f"I have new insurance starting the 1st ({pick(rng, ('Aetna', 'Blue Cross', 'Cigna', 'United'))}). "
        "How do I update it before my next visit?",
        f"What's the status of my referral to {pick(rng, ('dermatology', 'physical therapy', 'GI', 'sleep medicine'))}? "
        f"I haven't heard anything in {rng.randint(2, 5)} weeks.",
        f"Is there parking at the {pick(rng, ('north', 'new', 'east'))} clinic building, and which entrance do I use?",
        f"I need to move my {pick(rng, ('colonoscopy', 'MRI', 'CT scan', 'endoscopy'))} from next month to later in "
        "the summer. Who do I talk to?",
        f"Can I get a copy of my {pick(rng, ('lab results', 'vaccine record', 'MRI report'))} for my records? I don't "
        "need anyone to go over it.",
    ))


def _fd_urgent(rng: random.Random) -> str:
    return pick(rng, (
        f"My {pick(rng, ('colonoscopy', 'MRI', 'CT scan', 'endoscopy'))} is tomorrow at "
        f"{rng.randint(7, 10)}:{pick(rng, ('00', '15', '30', '45'))} and I have to reschedule because "
        f"{pick(rng, ('my driver cancelled', 'my child is sick', 'I got called into work'))}. Please call me today.",
        f"I need a work note for the days I missed ({_when(rng)}) or my employer won't let me back tomorrow.",
        "My insurance says they need a form from your office today or my surgery next "
        f"{pick(rng, WEEKDAYS)} gets cancelled.",
    ))


LOW_SUPPLY = ("I have about a week left of", "I'm running low on", "I'll need a refill soon of",
              "I have {n} days left of")
NO_SUPPLY = ("I'm out of", "I ran out of", "I have no more", "I took my last dose of")


def _supply(rng: random.Random, phrases: tuple[str, ...], med: str) -> str:
    """Supply x criticality, the rule's interaction: out of a critical medicine is urgent, while being out
    of a routine one, or low on any, is a routine refill; the same words occur on both sides."""
    lead = pick(rng, phrases).format(n=rng.randint(4, 9))
    return f"{lead} {med}. {pick(rng, ('Can you send a new prescription?', 'Please send it to ' + pick(rng, PHARMACIES) + '.', 'Can you call it in?'))}"


def _rx_routine(rng: random.Random) -> str:
    med = pick(rng, ROUTINE_MEDS)
    if rng.random() < 0.35:
        return pick(rng, (_supply(rng, NO_SUPPLY, pick(rng, ROUTINE_MEDS)),
                          _supply(rng, LOW_SUPPLY, pick(rng, CRITICAL_MEDS + ROUTINE_MEDS))))
    return pick(rng, (
        f"Can I get a refill of {med}? I have about {rng.randint(5, 12)} pills left. Please send it to "
        f"{pick(rng, PHARMACIES)}.",
        f"Please renew my {med}, {pick(rng, ('90 day supply', '30 day supply with refills', 'same as before'))}, "
        f"to {pick(rng, PHARMACIES)}.",
        f"Is it okay to take {pick(rng, ('ibuprofen', 'Sudafed', 'melatonin', 'Benadryl', 'turmeric'))} with my {med}?",
        f"I forgot my {med} {pick(rng, ('yesterday', 'this morning', 'last night'))}. Should I double up or just "
        "take the next one?",
        f"Should I take {med} with food or on an empty stomach? The label at {pick(rng, PHARMACIES)} doesn't say.",
        f"{pick(rng, PHARMACIES).capitalize()} switched my {med} to a different generic and the pills look different. "
        "Is it the same medicine?",
        f"My insurance wants me to use mail order for {med}. Can you send the prescription there instead?",
        f"I have about a week left of {pick(rng, CRITICAL_MEDS)}. Can you send the refill so I don't run out?",
        f"I took my {med} twice by mistake {pick(rng, ('last week', 'on Sunday'))} and felt fine, nothing happened. "
        "How do I avoid mixing them up again?",
    ))


def _rx_urgent(rng: random.Random) -> str:
    crit = pick(rng, CRITICAL_MEDS)
    risky = pick(rng, HIGH_RISK_MEDS)
    if rng.random() < 0.35:
        return _supply(rng, NO_SUPPLY, crit)
    return pick(rng, (
        f"I'm completely out of {crit} and the pharmacy says they need a new prescription. I need it today.",
        f"{pick(rng, PHARMACIES).capitalize()} says {crit} needs a prior authorization and I have no doses left.",
        f"I think I accidentally took two doses of {risky} {pick(rng, TIMES)}. I feel okay right now. "
        "What should I watch for?",
        f"I left my {crit} at my {pick(rng, ('sister', 'brother', 'friend'))}'s house {rng.randint(80, 300)} miles "
        "away and won't have it for tonight's dose.",
    ))


def _rx_emergent(rng: random.Random) -> str:
    risky = pick(rng, HIGH_RISK_MEDS)
    n = rng.randint(6, 30)
    return pick(rng, (
        f"My {rng.randint(2, 5)} year old got into my pill bottle and may have swallowed some of my {risky}. "
        f"There were about {n} pills and now some are missing.",
        f"I mixed up my bottles and took {n} of my {risky} instead of my vitamins {pick(rng, TIMES)}. "
        f"I feel {pick(rng, ('dizzy', 'very sleepy', 'shaky and sweaty', 'strange'))}.",
    ))


def _postop_temp(rng: random.Random, proc: str, lo: float, hi: float) -> str:
    """After a procedure, 100.4 F or more is a fever (urgent); below it, routine advice."""
    return (f"I had my {proc} {_when(rng)} and my temperature is {rng.uniform(lo, hi):.1f} "
            f"{pick(rng, ('tonight', 'this morning', 'today'))}. {pick(rng, ('Is that okay?', 'Should I worry?', 'What should I do?'))}")


def _home_bp(rng: random.Random, sys_lo: int, sys_hi: int, dia_lo: int, dia_hi: int) -> str:
    """Home readings of 180/110 or more are urgent; readings under 160/100 are routine."""
    return (f"My blood pressure at home was {rng.randint(sys_lo, sys_hi)}/{rng.randint(dia_lo, dia_hi)} "
            f"{pick(rng, ('this morning', 'twice today', 'last night'))}. No headache or chest pain.")


def _rn_routine(rng: random.Random) -> str:
    proc = pick(rng, PROCEDURES)
    if rng.random() < 0.3:
        return pick(rng, (_postop_temp(rng, proc, 98.6, 100.1), _home_bp(rng, 128, 156, 78, 96)))
    return pick(rng, (
        f"I had my {proc} {_when(rng)}. When can I shower and get the incision wet?",
        f"The steri-strips from my {proc} are starting to peel off. Should I pull them or leave them?",
        f"My home blood pressure readings have been around {rng.randint(132, 142)}/{rng.randint(82, 89)} this week. "
        "Do you want me to keep logging them?",
        f"How long after my {proc} can I {pick(rng, ('drive', 'lift my grandkids', 'go back to the gym', 'swim'))}?",
        f"I've had a runny nose and mild sore throat for {rng.randint(2, 4)} days, no fever. What can I do at home?",
        f"My glucose meter reads {rng.randint(105, 148)} in the mornings. How often should I be checking?",
        f"Can I get my {pick(rng, ('flu shot', 'COVID booster', 'shingles vaccine', 'tetanus shot'))} "
        "at the same visit as my labs?",
        "The CPAP mask leaves marks on my face every morning. Is there a different size I should try?",
        f"The edges of my {proc} incision are a little pink but not warm or spreading, and no fever. Is that normal healing?",
        f"There's a small spot of clear drainage on the bandage from my {proc}, no smell. Should I change it daily?",
    ))


def _rn_urgent(rng: random.Random) -> str:
    proc = pick(rng, PROCEDURES)
    if rng.random() < 0.3:
        return pick(rng, (_postop_temp(rng, proc, 100.5, 102.8), _home_bp(rng, 180, 204, 110, 124)))
    return pick(rng, (
        f"I had my {proc} {_when(rng)} and the incision is now red, warm and spreading. My temp is {_temp(rng)}.",
        f"I've been throwing up since {pick(rng, ('last night', 'yesterday morning', 'midnight'))} and can't keep "
        "water down.",
        f"My blood pressure at home is {rng.randint(178, 198)}/{rng.randint(102, 118)} this morning. "
        "No headache or chest pain.",
        f"My sugars have been over {rng.randint(310, 420)} for two days even with my insulin.",
        f"There's yellow drainage coming from my {proc} incision and it smells bad.",
        f"It burns when I pee and I'm going every {rng.randint(15, 40)} minutes since {pick(rng, WEEKDAYS)}.",
    ))


def _rn_emergent(rng: random.Random) -> str:
    proc = pick(rng, PROCEDURES)
    return pick(rng, (
        f"I had my {proc} {_when(rng)} and the dressing is soaked through with blood, I've changed it "
        f"{rng.randint(3, 5)} times in the last hour.",
        f"Since my {proc} my calf is swollen and now I suddenly can't catch my breath.",
        f"After my {proc} I'm bleeding a lot and feel like I'm going to pass out.",
    ))


def _md_routine(rng: random.Random) -> str:
    return pick(rng, (
        f"Can you explain my lab results? My A1c was {rng.randint(62, 78) / 10} and LDL {rng.randint(120, 190)}.",
        f"The report from my {pick(rng, ('MRI', 'X-ray', 'ultrasound', 'CT'))} says "
        f"\"{pick(rng, ('mild degenerative changes', 'small simple cyst', 'incidental nodule', 'mild fatty liver'))}\". "
        "What does that mean for me?",
        f"My {pick(rng, ('knee', 'shoulder', 'lower back', 'hip'))} has been aching for {rng.randint(3, 8)} weeks, "
        "worse on stairs. Should I be seen?",
        f"I've had a dry cough since starting {pick(rng, ('lisinopril', 'enalapril'))}. Could we switch to something else?",
        f"I have a rash on my {pick(rng, ('arms', 'back', 'neck'))} for {rng.randint(2, 4)} weeks that itches. "
        "It isn't spreading.",
        f"My TSH came back {rng.randint(45, 79) / 10}. Does my levothyroxine dose need to change?",
        f"I'd like to talk about stopping my {pick(rng, ROUTINE_MEDS)} now that I've lost {rng.randint(15, 40)} pounds.",
        "I had a few seconds of sharp pain in my chest when I coughed last week. It went away and I feel fine now. "
        "Should I mention it at my next visit?",
        f"My home blood pressure has crept up to about {rng.randint(138, 148)}/{rng.randint(86, 92)} over the last "
        "month. Should we change my medicine?",
    ))


def _md_urgent(rng: random.Random) -> str:
    return pick(rng, (
        f"I've had a fever of {_temp(rng)} for {rng.randint(2, 4)} days and my cough is getting worse.",
        f"My right calf has been swollen and tender since {pick(rng, WEEKDAYS)}. I flew back from "
        f"{pick(rng, ('Denver', 'Phoenix', 'Chicago', 'Atlanta'))} last week.",
        f"The portal says my potassium is {rng.randint(56, 60) / 10} and flagged high. Do I need to do anything?",
        f"My left eye is red and painful and my vision is blurry since {pick(rng, ('this morning', 'last night'))}.",
        "I've been feeling much more depressed for the past two weeks and can't get out of bed. "
        "I'm not thinking of hurting myself.",
        f"I have a new rash with fever of {_temp(rng)} and the spots are spreading.",
        f"My chest has felt tight when I walk up stairs for the past {rng.randint(2, 5)} days. It goes away when I rest.",
    ))


def _md_emergent(rng: random.Random) -> str:
    who = pick(rng, ("I", *RELATIVES))
    return pick(rng, (
        f"I've had chest pressure going into my left arm for {rng.randint(20, 50)} minutes and I'm sweating.",
        f"{who.capitalize()} suddenly can't lift {'my' if who == 'I' else 'their'} right arm and "
        f"{'my' if who == 'I' else 'their'} speech is slurred, started {pick(rng, ('20 minutes ago', 'about an hour ago'))}.",
        f"My face feels droopy on the {pick(rng, ('left', 'right'))} side and my words are coming out wrong.",
        "I don't want to be alive anymore and I have a plan to end it tonight.",
        f"My lips and throat are swelling after {pick(rng, ('a bee sting', 'eating shrimp', 'my first dose of amoxicillin'))} "
        "and it's hard to breathe.",
        "I can't catch my breath even sitting still and my lips look blue.",
        f"I've been coughing up {pick(rng, ('a lot of', 'cups of', 'bright red'))} blood {pick(rng, TIMES)}.",
    ))


#: (personnel, urgency) -> scenario. Absent pairs do not occur (administration is never emergent).
SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("front_desk", "routine"): _fd_routine, ("front_desk", "urgent"): _fd_urgent,
    ("pharmacist", "routine"): _rx_routine, ("pharmacist", "urgent"): _rx_urgent,
    ("pharmacist", "emergent"): _rx_emergent,
    ("nurse", "routine"): _rn_routine, ("nurse", "urgent"): _rn_urgent, ("nurse", "emergent"): _rn_emergent,
    ("physician", "routine"): _md_routine, ("physician", "urgent"): _md_urgent,
    ("physician", "emergent"): _md_emergent,
}
#: urgency mix per personnel (each personnel is a quarter of the data)
URGENCY_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "front_desk": (0.0, 0.2, 0.8), "pharmacist": (0.1, 0.3, 0.6), "nurse": (0.2, 0.35, 0.45),
    "physician": (0.3, 0.3, 0.4),
}


def _context(rng: random.Random, personnel: str) -> str:
    if personnel == "front_desk":
        return maybe(rng, 0.3, pick(rng, ("I'm a patient of Dr. [CLINICIAN].", "This is [NAME], DOB on file.",
                                          "Quick admin question.")))
    return maybe(rng, 0.6, pick(rng, (
        f"I'm {rng.randint(19, 88)} and have {pick(rng, ('diabetes', 'high blood pressure', 'asthma', 'COPD', 'no big health problems', 'a heart condition'))}.",
        f"I'm {rng.randint(19, 88)} years old.", "Sorry to bother you.", "Hope this is the right place to ask.",
        "Not sure who to ask about this.")))


def _detail(rng: random.Random, urgency: str) -> str:
    """A sentence of the kind real messages carry: availability, what was tried, who is around."""
    common = (
        f"Best number is the one on file, I'm free after {rng.randint(1, 5)} pm.",
        f"I tried calling but was on hold for {rng.randint(10, 45)} minutes.",
        f"I'm at work until {rng.randint(3, 6)}:{pick(rng, ('00', '30'))}, you can leave a message.",
        f"My last visit was {pick(rng, ('in the spring', 'a few months ago', 'last year', 'in January'))}.",
        "I'm sending this from my " + pick(rng, ("phone", "daughter's phone", "work computer")) + ", sorry for typos.",
        f"I've been your patient for about {rng.randint(2, 15)} years.",
        f"I'm on {pick(rng, ROUTINE_MEDS)} and {pick(rng, ROUTINE_MEDS)}, nothing new.",
        "I already checked the after-visit summary.",
    )
    urgent = (
        f"{pick(rng, RELATIVES).capitalize()} is here with me.", "I'm home by myself right now.",
        f"I can be reached at the number on file until {rng.randint(5, 9)} pm.",
    )
    return pick(rng, common if urgency == "routine" or rng.random() < 0.4 else urgent)


def _specifics(rng: random.Random, personnel: str, urgency: str) -> str:
    """Facts patients add, with numbers; chosen so they never contradict any message of that kind."""
    n = rng.randint(2, 12)
    age = rng.randint(24, 86)
    condition = pick(rng, ("diabetes", "high blood pressure", "asthma", "atrial fibrillation", "depression",
                           "kidney disease", "hypothyroidism"))
    pain = {"routine": (1, 4), "urgent": (4, 8), "emergent": (7, 10)}[urgency]
    pools = {
        "front_desk": (f"I'm available {pick(rng, WEEKDAYS)} or {pick(rng, WEEKDAYS)} after {n % 5 + 1} pm.",
                       f"My doctor is Dr. [CLINICIAN] at the {pick(rng, ('main', 'north', 'downtown'))} clinic.",
                       f"I called {n % 4 + 2} times already.",
                       f"I've been a patient at your office for {n} years."),
        "pharmacist": (f"I take it every {pick(rng, ('morning', 'evening', 'night'))}.",
                       f"My last fill was {n * 3 + 20} days ago.",
                       f"I've been on it for about {n} {pick(rng, ('months', 'years'))}.",
                       f"I weigh about {rng.randint(110, 260)} pounds."),
        "nurse": (f"I'm {age} years old.", f"My pain is about {rng.randint(*pain)}/10.",
                  f"I'm {age} and also have {condition}.", f"I live {pick(rng, ('alone', 'with my family'))}."),
        "physician": (f"I'm {age} years old.", f"I have a history of {condition}.",
                      f"I'm {age} and on {pick(rng, ROUTINE_MEDS)}.",
                      f"I last saw Dr. [CLINICIAN] {pick(rng, ('in the spring', 'a few months ago', 'last year'))}."),
    }
    return pick(rng, pools[personnel])


def _closing(rng: random.Random, urgency: str) -> str:
    tail = {
        "emergent": ("What should I do?", "Please help.", "Should I go to the ER?", "Is this serious?", ""),
        "urgent": ("Please call me back today.", "What should I do?", "Should I come in?", "Can someone call me?", ""),
        "routine": ("No rush.", "Thanks in advance.", "Whenever you get a chance.", "Let me know.", ""),
    }[urgency]
    return pick(rng, tail)


def _background(rng: random.Random) -> str:
    """What patients add that does not change who answers or how soon: medicines they take, old
    procedures, appointments they have, results that were fine, and red flags they do NOT have. Drawn
    the same way for every label, so these words are in every class and a bag of words cannot lean on them."""
    return pick(rng, (
        f"I take {pick(rng, ROUTINE_MEDS)} and {pick(rng, ('a baby aspirin', 'a multivitamin', pick(rng, ROUTINE_MEDS)))}.",
        "No chest pain or trouble breathing.", "No fever.", "I'm not bleeding and there's no swelling.",
        f"I had a {pick(rng, PROCEDURES)} {rng.randint(2, 12)} years ago, no problems since.",
        f"I have an appointment with Dr. [CLINICIAN] {pick(rng, ('next month', 'in the fall', 'in a few weeks'))} anyway.",
        f"My labs {pick(rng, ('in the spring', 'last year', 'a few months ago'))} were normal.",
        f"I filled everything at {pick(rng, PHARMACIES)} last month.",
        "I'm otherwise feeling okay.",
    ))


def _message(rng: random.Random, personnel: str, urgency: str) -> str:
    body = sentences(
        pick(rng, OPENERS),
        _context(rng, personnel),
        maybe(rng, 0.5, _background(rng)),
        SCENARIOS[(personnel, urgency)](rng),
        maybe(rng, 0.3, _background(rng)),
        maybe(rng, 0.8, _specifics(rng, personnel, urgency)),
        maybe(rng, 0.6, _detail(rng, urgency)),
        _closing(rng, urgency),
        maybe(rng, 0.7, f"{pick(rng, SIGNOFFS)} {pick(rng, PATIENT_NAMES)}"),
    )
    return lowercase_casual(rng, typo(rng, body, 0.3), 0.08)


def generate(n: int, seed: int) -> list[TriageRecord]:
    rng = random.Random(seed)

    def draw(i: int) -> TriageRecord:
        personnel = pick(rng, PERSONNEL)
        urgency = rng.choices(URGENCY, weights=URGENCY_WEIGHTS[personnel])[0]
        return TriageRecord(id=f"triage-{i + 1:06d}", message=_message(rng, personnel, urgency),
                            personnel=personnel, urgency=urgency)

    return distinct_records(n, draw, key=lambda r: r.message)
