"""The known clinical vocabulary: medications (usual doses, aliases, class), diagnoses, procedures.

The synthetic generator (`clinalign.synthetic.discharge_summary`) draws drugs and doses from it; the
scorer treats any term in it that a summary asserts but the note lacks as an invented fact. One table
for both, so a drug the generator can write is a drug the scorer recognises.
"""

from __future__ import annotations

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

