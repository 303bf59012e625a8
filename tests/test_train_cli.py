"""`clinalign train --help`: --config names the built-in defaults and calls the YAML an example."""

from __future__ import annotations

from clinalign.train.cli import _config_help
from clinalign.train.config import DEFAULT_EPOCHS, DEFAULT_LR


def test_config_help_states_the_built_in_defaults():
    text = _config_help("configs/train_sft.yaml")
    assert "configs/train_sft.yaml is an example, not the defaults" in text
    assert f"epochs SFT {DEFAULT_EPOCHS['sft']}, DPO {DEFAULT_EPOCHS['dpo']}" in text
    assert f"LoRA SFT {DEFAULT_LR['sft', True]:g}" in text and f"full DPO {DEFAULT_LR['dpo', False]:g}" in text


def test_train_help_lists_the_exit_codes():
    from typer.testing import CliRunner

    from clinalign.cli import app

    for stage in ("sft", "dpo"):
        text = " ".join(CliRunner().invoke(app, ["train", stage, "--help"]).output.split())
        assert "Exit codes: 0 done; 2 bad input or config (nothing written)" in text
        assert "3 diverged: start again with a lower lr; 75 stopped by SIGTERM: run the same command with --resume" in text
