"""clinalign.rate: the clinician rating web app (blinded Likert scores, pairwise preferences -> DPO pairs).

items.py (what is rated), db.py (SQLite storage: all of the app's SQL), app.py (the FastAPI app: guard
middleware, error pages, routers), auth.py / pages.py / api.py / admin.py (the routes by concern),
rating.py (the rules shared by pages and API), templates.py, agreement.py, export.py (Likert CSV, DPO
pairs, ``load_likert_csv``), cli.py (``clinalign rate ...``).
"""
