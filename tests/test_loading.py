"""One helper per question every layer asks: is this directory an adapter, where is its tokenizer, which
process am I."""

from __future__ import annotations

from pathlib import Path

from clinalign.models.loading import adapter_base, adapter_config, is_adapter, tokenizer_dir


def test_an_adapter_is_known_by_its_config_and_borrows_its_bases_tokenizer(tiny_model_dir, adapter_run):
    adapter = adapter_run / "final"
    assert is_adapter(adapter) and not is_adapter(tiny_model_dir)
    assert not is_adapter(None) and not is_adapter("")
    assert adapter_config(tiny_model_dir) is None and adapter_base(tiny_model_dir) is None
    assert adapter_config(adapter)["r"] == 4
    assert adapter_base(adapter) == Path(str(tiny_model_dir))
    assert not (adapter / "tokenizer_config.json").exists()  # saved without one: the base's is used
    assert tokenizer_dir(adapter) == Path(str(tiny_model_dir)) and tokenizer_dir(tiny_model_dir) == tiny_model_dir


def test_rank_and_world_come_from_torchrun_until_a_process_group_is_up(monkeypatch):
    from clinalign.study import parallel
    from clinalign.train.distributed import rank_world

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_world() == (0, 1) and parallel.is_main() and parallel.world() == 1
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_world() == (1, 2) and not parallel.is_main() and parallel.world() == 2
