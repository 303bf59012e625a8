"""`clinalign train --help`: --config names the built-in defaults and calls the YAML an example."""

from __future__ import annotations

from clinalign.train.cli import _config_help
from clinalign.train.config import DEFAULT_EPOCHS, DEFAULT_LR


def test_config_help_states_the_built_in_defaults():
    text = _config_help("configs/train_sft.yaml")
    assert "configs/train_sft.yaml is an example, not the defaults" in text
    assert f"epochs SFT {DEFAULT_EPOCHS['sft']}, DPO {DEFAULT_EPOCHS['dpo']}" in text
    assert f"LoRA SFT {DEFAULT_LR['sft', True]:g}" in text and f"full DPO {DEFAULT_LR['dpo', False]:g}" in text
