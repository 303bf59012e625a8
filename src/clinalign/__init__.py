"""clinalign: fine-tune open LLMs on clinical tasks with SFT and DPO, and compare them."""

__version__ = "0.1.0"
