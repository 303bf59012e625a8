"""Get trained models and training data out: merged models with a model card, and pairs in the
formats other tools and vendors take (see `pairs.py`, `model.py`)."""
