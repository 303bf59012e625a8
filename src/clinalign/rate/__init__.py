"""clinalign.rate: the clinician rating web app (blinded Likert scores, pairwise preferences -> DPO pairs).

items.py (what is rated), db.py (SQLite storage), app.py (FastAPI pages and API), agreement.py,
export.py (Likert CSV, DPO pairs, ``load_likert_csv``), cli.py (``clinalign rate ...``).
"""
