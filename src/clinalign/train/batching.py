"""Transition shim: the old home of tokenisation and packing, split by concern into
``train/tokenize.py`` (prompt and answer token ids, truncation), ``train/packing.py`` (shared-prompt
packing, the 4D mask, answer log-probs) and ``models/layers.py`` (decoder layer surgery).

Only public names are re-exported, for code written against the old module while the split merges;
import from the new modules instead. Remove this file once nothing imports it.
"""

from clinalign.train.packing import (
    PackedBatch,
    PairBatch,
    collate_pairs,
    collate_sft,
    pack,
    pair_logps,
    sft_forward,
)
from clinalign.train.tokenize import (
    IGNORE,
    TRUNCATION_POLICIES,
    PairExample,
    SFTExample,
    tokenize_pair,
    tokenize_sft,
)

__all__ = ["IGNORE", "TRUNCATION_POLICIES", "PackedBatch", "PairBatch", "PairExample", "SFTExample",
           "collate_pairs", "collate_sft", "pack", "pair_logps", "sft_forward", "tokenize_pair", "tokenize_sft"]
