"""The clinical knowledge table behind the clinical-reasoning task: its synthetic vignettes
(`clinalign.synthetic.clinical_reasoning`) and its most plausible wrong option for DPO pairs.

Each condition carries what a vignette needs to be coherent (who gets it, how it presents, vital
signs that fit, exam/lab/imaging findings) and what a question needs to be fair: the first-line
treatment, and the conditions it is confused with, so that distractors are the ones a clinician
would actually weigh (a chest-pain case offers other chest-pain diagnoses, not gout). Findings never
state vital signs: those come from the condition's vital-sign profile, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Sex = Literal["any", "female", "male"]
Setting = Literal["emergency", "clinic"]


@dataclass(frozen=True)
class Vitals:
    """Ranges (inclusive) that a vital-sign profile samples from."""

    temp: tuple[float, float]
    hr: tuple[int, int]
    sbp: tuple[int, int]
    dbp: tuple[int, int]
    rr: tuple[int, int]
    spo2: tuple[int, int]
    rhythm: str = ""  # e.g. "irregular", shown next to the heart rate


VITALS: dict[str, Vitals] = {
    "normal": Vitals((36.4, 37.2), (64, 92), (112, 138), (64, 86), (12, 18), (96, 99)),
    "mild_fever": Vitals((37.6, 38.3), (84, 104), (112, 136), (64, 84), (14, 20), (95, 99)),
    "febrile": Vitals((38.3, 39.6), (96, 118), (108, 136), (62, 84), (16, 22), (95, 99)),
    "septic": Vitals((38.4, 40.0), (114, 136), (72, 88), (38, 52), (24, 32), (91, 96)),
    "hypotensive": Vitals((36.2, 37.2), (112, 136), (72, 88), (40, 56), (20, 28), (94, 99)),
    "low_bp": Vitals((36.3, 37.2), (102, 122), (90, 106), (52, 64), (16, 22), (96, 99)),
    "pain": Vitals((36.5, 37.4), (92, 112), (134, 160), (82, 96), (16, 22), (97, 100)),
    "hypertensive": Vitals((36.5, 37.4), (68, 96), (166, 204), (94, 118), (14, 20), (95, 99)),
    "afib": Vitals((36.5, 37.3), (132, 162), (104, 138), (62, 88), (16, 24), (94, 98), "irregular"),
    "heart_failure": Vitals((36.4, 37.2), (94, 114), (142, 178), (82, 100), (22, 30), (86, 92)),
    "pe": Vitals((36.8, 37.9), (106, 128), (108, 136), (64, 84), (22, 30), (86, 92)),
    "wheezy": Vitals((36.6, 37.6), (102, 124), (118, 148), (68, 90), (24, 32), (88, 94)),
    "pneumothorax": Vitals((36.5, 37.2), (100, 118), (112, 136), (66, 84), (20, 26), (92, 96)),
    "dka": Vitals((36.4, 37.5), (110, 130), (96, 118), (54, 70), (26, 34), (97, 100)),
    "storm": Vitals((39.2, 40.6), (138, 168), (132, 164), (60, 82), (22, 30), (94, 98)),
    "withdrawal": Vitals((37.3, 38.2), (106, 128), (152, 178), (92, 106), (18, 24), (96, 99)),
    "bradypnea": Vitals((35.9, 36.8), (54, 70), (100, 124), (58, 76), (4, 8), (78, 88)),
    "brady": Vitals((36.3, 37.1), (40, 54), (98, 122), (56, 74), (14, 20), (95, 99)),
    "serotonin": Vitals((38.4, 40.2), (118, 142), (150, 178), (88, 104), (20, 28), (95, 99)),
}


@dataclass(frozen=True)
class Condition:
    name: str
    system: str
    ages: tuple[int, int]
    sex: Sex
    setting: Setting
    vitals: str  # a key of VITALS
    presentation: tuple[str, ...]  # chief complaint, as "presents with ..."
    history: tuple[str, ...]  # background or risk factors as noun phrases, the telling one first
    findings: tuple[str, ...]  # exam, labs, imaging, the key one first; never vital signs
    treatment: str  # first-line treatment or next step
    confusable: tuple[str, ...]  # names of conditions in this table, most plausible first
    #: conditions sharing a treatment group are never options of the same treatment question,
    #: because both treatments would be right (PE and DVT: anticoagulation)
    treatment_group: str = ""

    @property
    def group(self) -> str:
        return self.treatment_group or self.name


def C(name: str, system: str, ages: tuple[int, int], sex: Sex, setting: Setting, vitals: str,  # noqa: N802
      presentation: list[str], history: list[str], findings: list[str], treatment: str,
      confusable: list[str], treatment_group: str = "") -> Condition:
    """Table shorthand."""
    return Condition(name, system, ages, sex, setting, vitals, tuple(presentation), tuple(history),
                     tuple(findings), treatment, tuple(confusable), treatment_group)


CONDITIONS: tuple[Condition, ...] = (
    # ---- cardiovascular
    C("Acute ST-elevation myocardial infarction", "cardiovascular", (45, 86), "any", "emergency", "pain",
      ["crushing substernal chest pain radiating to the left arm for 40 minutes",
       "chest pressure with sweating and nausea that began an hour ago",
       "heavy central chest pain and breathlessness since waking"],
      ["hypertension and type 2 diabetes", "a 40-pack-year smoking history", "hyperlipidemia"],
      ["ST elevation in leads II, III and aVF with reciprocal ST depression in aVL",
       "high-sensitivity troponin 2,400 ng/L", "diaphoresis and an S4 gallop"],
      "Emergent percutaneous coronary intervention",
      ["Aortic dissection", "Acute pericarditis", "Pulmonary embolism"]),
    C("Acute pericarditis", "cardiovascular", (18, 55), "any", "emergency", "mild_fever",
      ["sharp chest pain that eases when sitting forward",
       "chest pain that is worse lying flat, a week after a cold",
       "stabbing central chest pain that worsens with deep breaths"],
      ["a recent upper respiratory infection", "no known cardiac disease"],
      ["diffuse concave ST elevation with PR depression", "a three-component friction rub at the left sternal border",
       "normal troponin and a small pericardial effusion without tamponade on echocardiography"],
      "NSAIDs plus colchicine",
      ["Acute ST-elevation myocardial infarction", "Pulmonary embolism", "Aortic dissection"]),
    C("Aortic dissection", "cardiovascular", (50, 85), "any", "emergency", "hypertensive",
      ["sudden tearing chest pain radiating to the back", "abrupt severe pain between the shoulder blades",
       "a ripping chest pain that was worst at its onset"],
      ["long-standing poorly controlled hypertension", "a known bicuspid aortic valve"],
      ["a systolic pressure 34 mm Hg lower in the left arm than the right",
       "a widened mediastinum on chest radiograph", "a soft early diastolic murmur at the right sternal border"],
      "IV beta-blocker to lower heart rate and blood pressure, and emergent surgical consultation",
      ["Acute ST-elevation myocardial infarction", "Acute pericarditis", "Pulmonary embolism"]),
    C("Atrial fibrillation with rapid ventricular response", "cardiovascular", (55, 88), "any", "emergency", "afib",
      ["palpitations and lightheadedness since yesterday", "a racing, irregular heartbeat and fatigue",
       "new breathlessness on exertion with palpitations"],
      ["hypertension", "heavy alcohol intake over the weekend", "obstructive sleep apnea"],
      ["an irregularly irregular narrow-complex rhythm without P waves on ECG",
       "no ischemic changes and a normal troponin", "a normal TSH"],
      "Rate control with a beta-blocker and anticoagulation guided by CHA2DS2-VASc",
      ["Acute decompensated heart failure", "Thyroid storm", "Pulmonary embolism"]),
    C("Acute decompensated heart failure", "cardiovascular", (60, 90), "any", "emergency", "heart_failure",
      ["two weeks of worsening breathlessness, orthopnea and leg swelling",
       "waking at night short of breath and a 4 kg weight gain",
       "breathlessness on minimal exertion and swollen ankles"],
      ["ischemic cardiomyopathy with an ejection fraction of 30%", "missed furosemide doses for a week",
       "a salty diet over the holidays"],
      ["bibasilar crackles and a jugular venous pressure of 12 cm", "BNP 1,850 pg/mL",
       "pulmonary vascular congestion and small bilateral effusions on chest radiograph",
       "pitting edema to the knees"],
      "IV loop diuretic (furosemide)",
      ["Community-acquired pneumonia", "COPD exacerbation", "Atrial fibrillation with rapid ventricular response"]),
    C("Infective endocarditis", "cardiovascular", (22, 60), "any", "emergency", "febrile",
      ["two weeks of fevers, night sweats and malaise", "three weeks of fever, fatigue and weight loss",
       "fevers and new painful red nodules on the fingertips"],
      ["injection drug use", "rheumatic heart disease"],
      ["three of three blood cultures growing Staphylococcus aureus",
       "a new holosystolic murmur at the left lower sternal border", "splinter hemorrhages and Janeway lesions",
       "a tricuspid valve vegetation on echocardiography"],
      "IV vancomycin pending susceptibilities",
      ["Septic shock", "Acute pericarditis", "Community-acquired pneumonia"]),
    # ---- pulmonary
    C("Community-acquired pneumonia", "pulmonary", (20, 85), "any", "emergency", "febrile",
      ["three days of productive cough, fever and right-sided pleuritic chest pain",
       "fever, chills and a cough with rust-colored sputum", "cough, fever and breathlessness after a cold"],
      ["type 2 diabetes", "a 20-pack-year smoking history", "no recent hospital stay or antibiotics"],
      ["right lower lobe consolidation on chest radiograph", "crackles and bronchial breath sounds at the right base",
       "WBC 16,800/µL with neutrophilia"],
      "Ceftriaxone plus azithromycin",
      ["Pulmonary embolism", "Acute decompensated heart failure", "COPD exacerbation"]),
    C("Pulmonary embolism", "pulmonary", (25, 80), "any", "emergency", "pe",
      ["sudden breathlessness and pleuritic chest pain", "acute shortness of breath and a near-faint",
       "sharp pain on breathing in and a little blood-streaked sputum"],
      ["a 12-hour flight three days ago", "a hip replacement two weeks ago", "metastatic pancreatic cancer"],
      ["a filling defect in a right lower lobe pulmonary artery on CT angiography", "clear lung fields on auscultation",
       "an elevated D-dimer and sinus tachycardia on ECG"],
      "Therapeutic anticoagulation (heparin or a direct oral anticoagulant)",
      ["Community-acquired pneumonia", "Spontaneous pneumothorax", "Acute pericarditis"],
      treatment_group="anticoagulation"),
    C("COPD exacerbation", "pulmonary", (55, 85), "any", "emergency", "wheezy",
      ["three days of increasing breathlessness and more purulent sputum",
       "worsening cough, wheeze and green sputum", "breathlessness walking to the bathroom after a cold"],
      ["a 50-pack-year smoking history", "an FEV1 of 45% predicted last year", "daily tiotropium"],
      ["diffuse expiratory wheeze with a prolonged expiratory phase",
       "hyperinflated lungs without consolidation on radiograph", "venous pH 7.36 with pCO2 52 mm Hg"],
      "Inhaled bronchodilators, a short course of oral prednisone and antibiotics",
      ["Acute decompensated heart failure", "Community-acquired pneumonia", "Acute asthma exacerbation"],
      treatment_group="bronchodilators"),
    C("Acute asthma exacerbation", "pulmonary", (18, 40), "any", "emergency", "wheezy",
      ["wheezing and chest tightness after a cold", "breathlessness after cleaning a friend's house with cats",
       "a night-time cough and wheeze no longer relieved by the rescue inhaler"],
      ["childhood asthma", "allergic rhinitis", "daily albuterol use for the past week"],
      ["diffuse polyphonic wheeze", "peak expiratory flow 45% of personal best",
       "speaking in short phrases and a normal chest radiograph"],
      "Inhaled albuterol with ipratropium and systemic corticosteroids",
      ["COPD exacerbation", "Anaphylaxis", "Spontaneous pneumothorax"], treatment_group="bronchodilators"),
    C("Spontaneous pneumothorax", "pulmonary", (18, 34), "male", "emergency", "pneumothorax",
      ["sudden one-sided chest pain and breathlessness at rest", "abrupt sharp left chest pain while watching TV",
       "pleuritic chest pain and shortness of breath that began suddenly this morning"],
      ["daily cigarette smoking", "a tall, thin build", "no known lung disease"],
      ["absent breath sounds and hyperresonance on the left", "a visceral pleural line with no lung markings "
       "beyond it on chest radiograph", "a midline trachea"],
      "Needle aspiration or a small-bore chest tube, depending on size and symptoms",
      ["Pulmonary embolism", "Acute pericarditis", "Acute asthma exacerbation"]),
    # ---- gastrointestinal
    C("Acute appendicitis", "gastrointestinal", (18, 45), "any", "emergency", "mild_fever",
      ["periumbilical pain that moved to the right lower quadrant, with loss of appetite",
       "a day of right lower abdominal pain and nausea", "abdominal pain that began around the navel and now "
       "sits low on the right"],
      ["no previous abdominal surgery", "no urinary symptoms"],
      ["tenderness at McBurney's point with rebound", "WBC 14,200/µL with a left shift",
       "a 10 mm non-compressible appendix on imaging", "right lower quadrant pain on palpation of the left side"],
      "Laparoscopic appendectomy with perioperative antibiotics",
      ["Acute cholecystitis", "Nephrolithiasis", "Small bowel obstruction"]),
    C("Acute cholecystitis", "gastrointestinal", (35, 75), "any", "emergency", "febrile",
      ["eight hours of right upper quadrant pain after a fatty meal",
       "constant right upper abdominal pain radiating to the right shoulder",
       "fever and right upper quadrant pain with vomiting"],
      ["previous episodes of pain after meals", "obesity"],
      ["gallstones, a thickened gallbladder wall and pericholecystic fluid on ultrasound", "a positive Murphy sign",
       "WBC 15,100/µL with normal bilirubin and lipase"],
      "IV antibiotics and early laparoscopic cholecystectomy",
      ["Acute pancreatitis", "Acute appendicitis", "Upper gastrointestinal bleeding from a peptic ulcer"]),
    C("Acute pancreatitis", "gastrointestinal", (30, 70), "any", "emergency", "low_bp",
      ["severe epigastric pain radiating to the back with vomiting",
       "epigastric pain after a weekend of heavy drinking", "constant upper abdominal pain and repeated vomiting"],
      ["heavy alcohol use", "known gallstones", "triglycerides above 1,000 mg/dL"],
      ["lipase 1,450 U/L", "epigastric tenderness with guarding", "peripancreatic fat stranding on CT"],
      "Goal-directed IV fluids (lactated Ringer's), analgesia and early oral feeding",
      ["Acute cholecystitis", "Upper gastrointestinal bleeding from a peptic ulcer", "Small bowel obstruction"],
      treatment_group="iv_fluids"),
    C("Upper gastrointestinal bleeding from a peptic ulcer", "gastrointestinal", (40, 85), "any", "emergency",
      "low_bp",
      ["black tarry stools and lightheadedness", "vomiting coffee-ground material",
       "two episodes of melena and nearly fainting on standing"],
      ["daily ibuprofen for knee pain", "untreated Helicobacter pylori infection", "daily aspirin"],
      ["hemoglobin 7.9 g/dL from a baseline of 13", "BUN 48 mg/dL with creatinine 0.9 mg/dL",
       "melena on rectal examination"],
      "IV proton pump inhibitor, resuscitation and endoscopy within 24 hours",
      ["Acute pancreatitis", "Acute cholecystitis", "Clostridioides difficile colitis"]),
    C("Small bowel obstruction", "gastrointestinal", (40, 85), "any", "emergency", "low_bp",
      ["colicky abdominal pain, vomiting and no flatus for a day", "abdominal distension and bilious vomiting",
       "crampy abdominal pain and no bowel movement for two days"],
      ["previous open abdominal surgery", "an appendectomy 20 years ago"],
      ["dilated small-bowel loops with a transition point on CT", "high-pitched tinkling bowel sounds",
       "a distended, tympanitic abdomen without peritonitis"],
      "Bowel rest, nasogastric decompression and IV fluids",
      ["Acute pancreatitis", "Acute appendicitis", "Acute diverticulitis"], treatment_group="iv_fluids"),
    C("Clostridioides difficile colitis", "gastrointestinal", (50, 90), "any", "emergency", "mild_fever",
      ["watery diarrhea eight times a day", "cramping abdominal pain and profuse watery diarrhea",
       "three days of foul-smelling diarrhea and low-grade fever"],
      ["clindamycin for a dental abscess two weeks ago", "a recent hospital stay with IV antibiotics",
       "a daily proton pump inhibitor"],
      ["a positive C. difficile toxin assay", "WBC 17,500/µL", "diffuse mild abdominal tenderness"],
      "Oral vancomycin or fidaxomicin",
      ["Acute diverticulitis", "Small bowel obstruction", "Upper gastrointestinal bleeding from a peptic ulcer"]),
    C("Acute diverticulitis", "gastrointestinal", (50, 85), "any", "emergency", "mild_fever",
      ["two days of left lower quadrant pain and fever", "constant left lower abdominal pain and constipation",
       "left-sided lower abdominal pain that has worsened over three days"],
      ["diverticulosis on a screening colonoscopy", "chronic constipation"],
      ["sigmoid wall thickening with pericolic fat stranding and no abscess on CT",
       "left lower quadrant tenderness without peritonitis", "WBC 13,400/µL"],
      "Oral antibiotics (amoxicillin-clavulanate) and a clear liquid diet",
      ["Clostridioides difficile colitis", "Acute appendicitis", "Small bowel obstruction"]),
    # ---- neurologic
    C("Acute ischemic stroke", "neurologic", (55, 88), "any", "emergency", "hypertensive",
      ["sudden right arm weakness and slurred speech that began 90 minutes ago",
       "a left facial droop and left leg weakness noticed an hour ago",
       "abrupt difficulty finding words and right-sided weakness"],
      ["atrial fibrillation not on anticoagulation", "hypertension and type 2 diabetes"],
      ["fingerstick glucose 112 mg/dL and no hemorrhage on non-contrast CT of the head", "an NIHSS score of 9",
       "a left-sided gaze preference"],
      "IV thrombolysis (alteplase or tenecteplase) if there are no contraindications",
      ["Subarachnoid hemorrhage", "Hypoglycemia from a sulfonylurea", "Guillain-Barre syndrome"]),
    C("Subarachnoid hemorrhage", "neurologic", (35, 70), "any", "emergency", "hypertensive",
      ["a sudden, explosive headache during exercise, the worst ever experienced", "a thunderclap headache followed by vomiting",
       "a severe headache that peaked within a minute"],
      ["cigarette smoking", "polycystic kidney disease in the family", "hypertension"],
      ["blood in the basal cisterns on non-contrast CT", "neck stiffness without fever",
       "xanthochromia on lumbar puncture"],
      "Nimodipine and urgent neurosurgical or endovascular securing of the aneurysm",
      ["Migraine without aura", "Bacterial meningitis", "Acute ischemic stroke"]),
    C("Bacterial meningitis", "neurologic", (18, 70), "any", "emergency", "febrile",
      ["fever, severe headache and a stiff neck", "confusion, fever and light sensitivity since this morning",
       "a day of headache, vomiting and fever"],
      ["a recent middle ear infection", "no recent travel"],
      ["CSF with 2,400 WBC/µL (90% neutrophils), glucose 25 mg/dL and protein 210 mg/dL",
       "neck stiffness with a positive Kernig sign",
       "Gram-positive diplococci on the CSF Gram stain"],
      "Empiric IV ceftriaxone, vancomycin and dexamethasone",
      ["Subarachnoid hemorrhage", "Migraine without aura", "Septic shock"]),
    C("Migraine without aura", "neurologic", (18, 50), "any", "clinic", "normal",
      ["a recurrent one-sided throbbing headache with light sensitivity",
       "a pulsating headache with nausea that lasts most of a day", "monthly headaches that force them to lie "
       "in a dark room"],
      ["similar headaches since adolescence", "a mother with migraines"],
      ["a normal neurologic examination", "no fever, neck stiffness or papilledema",
       "photophobia in the exam room"],
      "An NSAID or a triptan",
      ["Subarachnoid hemorrhage", "Bacterial meningitis", "Acute ischemic stroke"]),
    C("Generalized convulsive status epilepticus", "neurologic", (18, 80), "any", "emergency", "pain",
      ["continuous generalized shaking for seven minutes",
       "repeated convulsions without regaining consciousness between them",
       "a seizure that has not stopped by the time paramedics arrive"],
      ["epilepsy with missed levetiracetam doses", "a previous head injury"],
      ["ongoing tonic-clonic activity with a fingerstick glucose of 104 mg/dL", "a bitten tongue and incontinence",
       "no response to voice or pain between convulsions"],
      "IV lorazepam (IM midazolam if there is no IV access)",
      ["Hypoglycemia from a sulfonylurea", "Alcohol withdrawal", "Acute ischemic stroke"]),
    C("Guillain-Barre syndrome", "neurologic", (20, 70), "any", "emergency", "normal",
      ["weakness climbing up the legs two weeks after a diarrheal illness",
       "tingling feet and symmetric weakness that has progressed over a week",
       "difficulty climbing stairs and numb fingers after a flu-like illness"],
      ["Campylobacter gastroenteritis last month", "a recent viral illness"],
      ["absent reflexes in the arms and legs", "CSF protein 180 mg/dL with 2 cells/µL",
       "a forced vital capacity of 2.1 L and falling"],
      "IV immunoglobulin or plasma exchange",
      ["Acute ischemic stroke", "Hyperkalemia with ECG changes", "Rhabdomyolysis"]),
    # ---- endocrine
    C("Diabetic ketoacidosis", "endocrine", (18, 45), "any", "emergency", "dka",
      ["two days of vomiting, abdominal pain and thirst", "passing large volumes of urine, nausea and deep rapid "
       "breathing", "drowsiness and vomiting after several days of feeling unwell"],
      ["type 1 diabetes with missed insulin doses", "a recent flu-like illness"],
      ["glucose 540 mg/dL with an anion gap of 26", "venous pH 7.12 and bicarbonate 9 mmol/L",
       "strongly positive serum ketones", "potassium 5.4 mmol/L"],
      "IV fluids, an IV insulin infusion and potassium replacement",
      ["Acute pancreatitis", "Adrenal crisis", "Septic shock"]),
    C("Thyroid storm", "endocrine", (20, 60), "any", "emergency", "storm",
      ["fever, agitation and palpitations two days after minor surgery", "high fever, confusion and diarrhea",
       "shaking, sweating and a pounding heart that began this morning"],
      ["untreated Graves disease", "methimazole stopped two months ago"],
      ["undetectable TSH with a markedly high free T4", "a diffuse goiter with a bruit and lid lag",
       "a fine tremor and warm, moist skin"],
      "A beta-blocker, a thionamide, iodine one hour after the thionamide, and hydrocortisone",
      ["Atrial fibrillation with rapid ventricular response", "Serotonin syndrome", "Alcohol withdrawal"]),
    C("Adrenal crisis", "endocrine", (25, 80), "any", "emergency", "hypotensive",
      ["vomiting, abdominal pain and dizziness", "profound weakness and fainting during a stomach bug",
       "confusion and low blood pressure after two days of vomiting"],
      ["long-term prednisone stopped abruptly a week ago", "known Addison disease"],
      ["a random cortisol of 2 µg/dL", "sodium 128 mmol/L and potassium 5.8 mmol/L",
       "hypotension that does not respond to 2 L of fluids"],
      "IV hydrocortisone 100 mg with IV fluids",
      ["Septic shock", "Diabetic ketoacidosis", "Hypoglycemia from a sulfonylurea"]),
    C("Hypoglycemia from a sulfonylurea", "endocrine", (65, 90), "any", "emergency", "normal",
      ["confusion and sweating this morning", "drowsiness and sweating noticed by family",
       "slurred speech and odd behavior before breakfast"],
      ["type 2 diabetes treated with glipizide", "worsening kidney function", "poor oral intake this week"],
      ["fingerstick glucose 38 mg/dL", "creatinine 2.1 mg/dL, up from 1.2", "no focal neurologic deficit"],
      "IV dextrose, then observation with octreotide if hypoglycemia recurs",
      ["Acute ischemic stroke", "Adrenal crisis", "Opioid overdose"]),
    # ---- renal / urologic
    C("Acute pyelonephritis", "renal/urologic", (18, 70), "any", "emergency", "febrile",
      ["fever, right flank pain and burning on urination", "rigors, vomiting and flank pain",
       "two days of painful urination followed by fever and back pain"],
      ["a bladder infection last month", "type 2 diabetes"],
      ["pyuria and positive nitrites on urinalysis", "costovertebral angle tenderness", "WBC 15,000/µL"],
      "IV ceftriaxone, then oral therapy adjusted to the urine culture",
      ["Nephrolithiasis", "Acute appendicitis", "Acute urinary retention"]),
    C("Nephrolithiasis", "renal/urologic", (25, 60), "any", "emergency", "pain",
      ["colicky flank pain radiating to the groin", "sudden severe flank pain and blood in the urine",
       "waves of right-sided back pain with vomiting"],
      ["a previous kidney stone", "low fluid intake in a hot working environment"],
      ["a 4 mm stone at the right ureterovesical junction on non-contrast CT", "microscopic hematuria without pyuria",
       "a normal creatinine"],
      "Analgesia with an NSAID and tamsulosin to help passage",
      ["Acute pyelonephritis", "Acute appendicitis", "Aortic dissection"]),
    C("Prerenal acute kidney injury", "renal/urologic", (60, 90), "any", "emergency", "low_bp",
      ["scant urine output after several days of vomiting", "dizziness and scant urine after gastroenteritis",
       "weakness and reduced urine output during a heat wave"],
      ["lisinopril and furosemide for hypertension", "regular ibuprofen use"],
      ["creatinine 2.4 mg/dL from a baseline of 0.9", "BUN/creatinine ratio 28 and FENa below 1%",
       "dry mucous membranes and orthostatic hypotension"],
      "IV isotonic fluids and holding nephrotoxic and antihypertensive medications",
      ["Rhabdomyolysis", "Acute urinary retention", "Hyperkalemia with ECG changes"], treatment_group="iv_fluids"),
    C("Hyperkalemia with ECG changes", "renal/urologic", (40, 85), "any", "emergency", "brady",
      ["generalized weakness after missing two dialysis sessions", "palpitations and muscle weakness",
       "feeling weak and faint since yesterday"],
      ["end-stage kidney disease on hemodialysis", "spironolactone started last month"],
      ["potassium 7.1 mmol/L on a non-hemolyzed sample", "peaked T waves and a widened QRS on ECG",
       "symmetric proximal weakness with intact sensation"],
      "IV calcium gluconate, then insulin with dextrose",
      ["Prerenal acute kidney injury", "Adrenal crisis", "Rhabdomyolysis"]),
    C("Acute urinary retention", "renal/urologic", (60, 90), "male", "emergency", "pain",
      ["inability to pass urine for 12 hours with lower abdominal pain",
       "dribbling urine and painful fullness above the pubis", "lower abdominal swelling and no urine since last night"],
      ["benign prostatic hyperplasia", "an over-the-counter antihistamine started for a cold"],
      ["a bladder scan volume of 950 mL", "a tender, palpable bladder", "a smooth, enlarged prostate"],
      "Bladder catheterization",
      ["Prerenal acute kidney injury", "Acute pyelonephritis", "Nephrolithiasis"]),
    # ---- infectious
    C("Septic shock", "infectious", (50, 90), "any", "emergency", "septic",
      ["fever, rigors and confusion over a day", "lethargy, fever and mottled skin",
       "a day of fever followed by a collapse at home"],
      ["type 2 diabetes", "residence in a nursing home", "chemotherapy for lymphoma last month"],
      ["mean arterial pressure 58 mm Hg after 30 mL/kg of crystalloid", "lactate 4.6 mmol/L",
       "cool, mottled extremities"],
      "Broad-spectrum antibiotics within an hour, IV fluids and norepinephrine",
      ["Adrenal crisis", "Infective endocarditis", "Anaphylaxis"]),
    C("Cellulitis", "infectious", (25, 80), "any", "clinic", "mild_fever",
      ["a spreading red, warm, painful patch on the lower leg", "two days of a swollen, tender red shin",
       "redness and warmth of the calf that has spread since yesterday"],
      ["athlete's foot between the toes", "obesity and chronic leg swelling"],
      ["non-purulent erythema with poorly demarcated borders", "no fluctuance or crepitus",
       "pain in proportion to the skin findings"],
      "Oral cephalexin",
      ["Deep vein thrombosis", "Necrotizing fasciitis", "Gout flare"]),
    C("Necrotizing fasciitis", "infectious", (35, 75), "any", "emergency", "febrile",
      ["severe leg pain out of proportion to the skin findings", "rapidly spreading painful swelling of the thigh",
       "a small cut on the shin that became exquisitely painful and swollen overnight"],
      ["poorly controlled type 2 diabetes", "a gardening cut three days ago"],
      ["crepitus and hemorrhagic bullae", "CRP 280 mg/L and sodium 131 mmol/L", "gas in the soft tissues on CT"],
      "Emergent surgical debridement with broad IV antibiotics including clindamycin",
      ["Cellulitis", "Deep vein thrombosis", "Septic arthritis"]),
    # ---- hematologic
    C("Iron deficiency anemia", "hematologic", (20, 45), "female", "clinic", "normal",
      ["months of fatigue and craving ice", "breathlessness climbing stairs and feeling tired all the time",
       "tiredness, hair thinning and brittle nails"],
      ["heavy menstrual bleeding", "a vegetarian diet"],
      ["hemoglobin 9.1 g/dL with MCV 71 fL", "ferritin 6 ng/mL", "pale conjunctivae and spoon-shaped nails"],
      "Oral iron and evaluation of the source of blood loss",
      ["Major depressive disorder", "Thrombotic thrombocytopenic purpura", "Sickle cell vaso-occlusive crisis"]),
    C("Deep vein thrombosis", "hematologic", (30, 80), "any", "clinic", "normal",
      ["calf swelling and pain in one leg after a long drive", "a painful swollen left leg a week after knee surgery",
       "three days of aching and swelling in the right calf"],
      ["knee arthroscopy last week", "active colon cancer"],
      ["a non-compressible popliteal vein on ultrasound", "a calf 3 cm larger than the other with pitting edema",
       "no erythema and no fever"],
      "Anticoagulation with a direct oral anticoagulant such as apixaban",
      ["Cellulitis", "Pulmonary embolism", "Necrotizing fasciitis"], treatment_group="anticoagulation"),
    C("Thrombotic thrombocytopenic purpura", "hematologic", (25, 60), "any", "emergency", "mild_fever",
      ["fever, confusion and a new rash of tiny red spots", "headache, easy bruising and fatigue",
       "new confusion and nosebleeds over two days"],
      ["a normal platelet count at a check-up last year", "no recent diarrheal illness"],
      ["platelets 18,000/µL with schistocytes on the smear", "LDH 1,200 U/L with undetectable haptoglobin",
       "creatinine 1.6 mg/dL"],
      "Urgent plasma exchange and corticosteroids",
      ["Bacterial meningitis", "Septic shock", "Iron deficiency anemia"]),
    C("Sickle cell vaso-occlusive crisis", "hematologic", (18, 35), "any", "emergency", "pain",
      ["severe pain in the back and legs like previous crises", "diffuse bone pain that began after a cold",
       "aching pain in both thighs and the lower back since last night"],
      ["sickle cell disease (HbSS) with yearly admissions", "hydroxyurea therapy"],
      ["hemoglobin 7.4 g/dL, near baseline, with reticulocytes 12%",
       "a clear chest radiograph and oxygen saturation at baseline", "no focal joint swelling"],
      "Prompt IV opioid analgesia and fluids",
      ["Septic arthritis", "Pulmonary embolism", "Iron deficiency anemia"]),
    # ---- immunologic
    C("Anaphylaxis", "immunologic", (18, 70), "any", "emergency", "hypotensive",
      ["throat tightness and hives minutes after a bee sting",
       "wheezing, lip swelling and lightheadedness after eating peanuts",
       "flushing, vomiting and faintness right after an IV antibiotic"],
      ["a known peanut allergy", "no previous reactions"],
      ["diffuse urticaria and inspiratory stridor", "wheeze throughout both lungs", "swelling of the lips and tongue"],
      "Intramuscular epinephrine 0.5 mg",
      ["ACE-inhibitor angioedema", "Acute asthma exacerbation", "Septic shock"]),
    C("ACE-inhibitor angioedema", "immunologic", (45, 80), "any", "emergency", "normal",
      ["swelling of the lips and tongue without itching", "a swollen tongue on waking and trouble swallowing",
       "one-sided lip swelling that has grown over six hours"],
      ["lisinopril for hypertension", "no known allergies"],
      ["non-pitting swelling of the lips and tongue without urticaria", "no wheeze and no stridor",
       "a normal C4 level"],
      "Stop the ACE inhibitor and monitor the airway closely, ready to intubate",
      ["Anaphylaxis", "Acute asthma exacerbation"]),
    # ---- musculoskeletal
    C("Gout flare", "musculoskeletal", (40, 80), "any", "clinic", "pain",
      ["a red, hot, swollen big toe that began overnight",
       "sudden pain and swelling of the first toe joint after a large meal with beer",
       "an exquisitely painful swollen ankle since last night"],
      ["hypertension treated with hydrochlorothiazide", "similar episodes in the past"],
      ["needle-shaped negatively birefringent crystals in the joint fluid", "serum urate 9.2 mg/dL",
       "erythema and exquisite tenderness over the joint"],
      "An NSAID, colchicine or a corticosteroid",
      ["Septic arthritis", "Cellulitis"]),
    C("Septic arthritis", "musculoskeletal", (18, 80), "any", "emergency", "febrile",
      ["a hot, swollen knee with fever and inability to bear weight", "an acutely painful knee effusion and fever",
       "two days of a swollen, painful knee and chills"],
      ["rheumatoid arthritis treated with methotrexate", "a knee steroid injection two weeks ago"],
      ["synovial fluid WBC 85,000/µL with 92% neutrophils",
       "Gram-positive cocci in clusters on the synovial fluid Gram stain", "severe pain on any passive movement"],
      "Urgent joint drainage and IV antibiotics (vancomycin)",
      ["Gout flare", "Cellulitis", "Sickle cell vaso-occlusive crisis"]),
    C("Rhabdomyolysis", "musculoskeletal", (18, 50), "any", "emergency", "low_bp",
      ["severe muscle pain and dark urine after a marathon",
       "leg pain and cola-colored urine after a long lie on the floor while intoxicated",
       "aching thighs and brown urine two days after an intense new workout"],
      ["a new high-intensity training program", "heavy heat exposure at work"],
      ["CK 48,000 U/L", "urine dipstick positive for blood with no red cells on microscopy",
       "creatinine 1.8 mg/dL"],
      "Aggressive IV isotonic fluids",
      ["Prerenal acute kidney injury", "Hyperkalemia with ECG changes", "Guillain-Barre syndrome"],
      treatment_group="iv_fluids"),
    # ---- psychiatric
    C("Major depressive disorder", "psychiatric", (20, 70), "any", "clinic", "normal",
      ["low mood, loss of interest and poor sleep for six weeks", "two months of feeling worthless and exhausted",
       "no longer enjoying anything and waking at 4 a.m. for two months"],
      ["a recent divorce", "no history of manic episodes"],
      ["a PHQ-9 score of 18", "no psychotic features and no suicidal plan", "a normal TSH and blood count"],
      "An SSRI such as sertraline plus psychotherapy",
      ["Generalized anxiety disorder", "Bipolar I disorder, current manic episode", "Iron deficiency anemia"],
      treatment_group="ssri"),
    C("Generalized anxiety disorder", "psychiatric", (20, 65), "any", "clinic", "normal",
      ["six months of constant worry about work and family with poor sleep",
       "restlessness, muscle tension and trouble concentrating on most days this year",
       "feeling on edge and unable to stop worrying for months"],
      ["no substance use", "a demanding new job"],
      ["a GAD-7 score of 16", "no panic attacks and no depressive episodes", "a normal TSH"],
      "An SSRI such as escitalopram and cognitive behavioral therapy",
      ["Major depressive disorder", "Bipolar I disorder, current manic episode", "Alcohol withdrawal"],
      treatment_group="ssri"),
    C("Bipolar I disorder, current manic episode", "psychiatric", (18, 45), "any", "emergency", "normal",
      ["five days with almost no sleep, rapid speech and a spending spree",
       "grandiose plans, irritability and racing thoughts for a week",
       "a week of boundless energy, little sleep and reckless driving"],
      ["a depressive episode two years ago", "a father with bipolar disorder"],
      ["pressured speech and flight of ideas", "a negative urine drug screen and a normal TSH",
       "no hallucinations and intact orientation"],
      "Lithium or an atypical antipsychotic such as quetiapine",
      ["Generalized anxiety disorder", "Major depressive disorder", "Serotonin syndrome"]),
    C("Alcohol withdrawal", "psychiatric", (30, 70), "any", "emergency", "withdrawal",
      ["tremor, anxiety and sweating a day after stopping drinking",
       "agitation and seeing insects on the walls two days after the last drink",
       "shakiness and vomiting since running out of alcohol yesterday"],
      ["daily intake of a liter of vodka", "a withdrawal seizure in the past"],
      ["a CIWA-Ar score of 19", "a coarse tremor of the outstretched hands", "an undetectable blood ethanol level"],
      "Symptom-triggered benzodiazepines and IV thiamine",
      ["Thyroid storm", "Serotonin syndrome", "Generalized convulsive status epilepticus"]),
    # ---- toxicologic
    C("Opioid overdose", "toxicologic", (18, 60), "any", "emergency", "bradypnea",
      ["unresponsiveness with slow, shallow breathing, found by a friend", "deep drowsiness after taking a friend's pills",
       "collapse in a public restroom with snoring respirations"],
      ["opioid use disorder", "chronic back pain treated with oxycodone"],
      ["pinpoint pupils", "no focal neurologic deficit", "fingerstick glucose 110 mg/dL"],
      "IV or intranasal naloxone",
      ["Hypoglycemia from a sulfonylurea", "Acetaminophen overdose", "Generalized convulsive status epilepticus"]),
    C("Acetaminophen overdose", "toxicologic", (18, 50), "any", "emergency", "normal",
      ["nausea after swallowing a bottle of acetaminophen tablets six hours ago",
       "vomiting the morning after an intentional ingestion of pain relievers",
       "abdominal discomfort after taking 40 extra-strength tablets"],
      ["depression", "a recent breakup"],
      ["a 4-hour acetaminophen level of 220 µg/mL, above the treatment line", "a still-normal ALT",
       "no co-ingestants on the toxicology screen"],
      "IV N-acetylcysteine",
      ["Opioid overdose", "Serotonin syndrome"]),
    C("Serotonin syndrome", "toxicologic", (20, 60), "any", "emergency", "serotonin",
      ["agitation, sweating and muscle twitching after starting tramadol",
       "confusion, shivering and diarrhea after a dose increase of an antidepressant",
       "restlessness, tremor and jerking legs since yesterday"],
      ["sertraline for depression", "linezolid started for a wound infection"],
      ["inducible clonus and hyperreflexia, worse in the legs", "dilated pupils and diaphoresis",
       "a mildly elevated CK"],
      "Stop serotonergic drugs and give benzodiazepines, with cyproheptadine if needed",
      ["Alcohol withdrawal", "Thyroid storm", "Opioid overdose"]),
)

BY_NAME: dict[str, Condition] = {c.name: c for c in CONDITIONS}


def by_system() -> dict[str, list[Condition]]:
    out: dict[str, list[Condition]] = {}
    for c in CONDITIONS:
        out.setdefault(c.system, []).append(c)
    return out


def check_table() -> list[str]:
    """Problems in the table (empty when sound); run by the tests."""
    problems = []
    if len(BY_NAME) != len(CONDITIONS):
        problems.append("duplicate condition names")
    treatments = [c.treatment for c in CONDITIONS]
    if len(set(treatments)) != len(treatments):
        problems.append("duplicate treatments")
    for c in CONDITIONS:
        if c.vitals not in VITALS:
            problems.append(f"{c.name}: unknown vitals profile {c.vitals!r}")
        if len(c.presentation) < 3 or len(c.findings) < 3 or len(c.history) < 2 or not c.treatment:
            problems.append(f"{c.name}: needs 3+ presentations, 3+ findings, 2+ history items and a treatment")
        if not 18 <= c.ages[0] < c.ages[1] <= 90:
            problems.append(f"{c.name}: implausible age range {c.ages}")
        if not c.confusable:
            problems.append(f"{c.name}: no confusable conditions")
        for other in c.confusable:
            if other not in BY_NAME or other == c.name:
                problems.append(f"{c.name}: confusable {other!r} is not another condition in the table")
    return problems
