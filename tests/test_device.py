"""The one device/precision policy (models/device.py): what ``auto`` resolves to, a clear error naming
the option for combinations that cannot run, and bfloat16 on CPU end to end for label scoring."""

from __future__ import annotations

import pytest
import torch
import yaml

from clinalign.errors import ConfigError
from clinalign.models.device import resolve
from clinalign.synthetic import generate


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def old_gpu(monkeypatch):
    """A GPU without bfloat16 (e.g. a V100), whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")


def test_auto_is_float32_on_cpu_and_bf16_only_on_a_gpu_that_has_it(no_gpu, monkeypatch):
    p = resolve("auto", "auto")
    assert (p.device.type, p.dtype, p.torch_dtype) == ("cpu", "float32", torch.float32)
    assert resolve("cpu", "bfloat16").torch_dtype is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "3")  # torchrun: each process on its own GPU
    p = resolve("auto", "auto")
    assert (p.device, p.dtype) == (torch.device("cuda", 3), "bfloat16")
    assert resolve("cpu", "auto").dtype == "float32"


def test_bf16_on_a_cpu_without_native_bf16_matmul_says_it_is_slower(no_gpu, monkeypatch):
    import warnings

    from clinalign.models import device

    monkeypatch.setattr(device, "cpu_has_bf16_matmul", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"dtype: bfloat16 on a CPU without AMX or AVX512-BF16 .* set dtype: float32"):
        assert resolve("cpu", "bfloat16").dtype == "bfloat16"  # still runs: slower, not wrong
    monkeypatch.setattr(device, "cpu_has_bf16_matmul", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("cpu", "bfloat16").dtype == "bfloat16"
        assert resolve("cpu", "float32").dtype == "float32"


def test_auto_on_a_gpu_without_bf16_is_float32(old_gpu):
    assert resolve("auto", "auto").dtype == "float32"
    with pytest.raises(ConfigError, match=r"dtype: bfloat16 is not supported by this GPU \(Tesla V100\)"):
        resolve("cuda", "bfloat16")


@pytest.mark.parametrize(("device", "dtype", "load_in_4bit", "message"), [
    ("cuda", "auto", False, "device: cuda was asked for, but PyTorch sees no CUDA GPU"),
    ("auto", "float16", False, "dtype: float16 does not run on CPU"),
    ("cpu", "float16", False, "dtype: float16 does not run on CPU"),
    ("cpu", "auto", True, "load_in_4bit: QLoRA's 4-bit base weights .* need a CUDA GPU"),
    ("gpu", "auto", False, "device: 'gpu' is not one of auto, cpu, cuda"),
    ("cpu", "fp8", False, "dtype: 'fp8' is not one of"),
])
def test_impossible_combinations_name_the_option(no_gpu, device, dtype, load_in_4bit, message):
    with pytest.raises(ConfigError, match=message):
        resolve(device, dtype, load_in_4bit)


def test_training_refuses_them_before_loading(no_gpu, tiny_model_dir):
    from clinalign.train.config import build_config
    from clinalign.train.loop import load_policy

    for values, message in [({"device": "cuda"}, "device: cuda"), ({"dtype": "float16"}, "dtype: float16"),
                            ({"load_in_4bit": True}, "load_in_4bit")]:
        cfg = build_config(None, values={"model": str(tiny_model_dir), **values})
        with pytest.raises(ConfigError, match=message):
            load_policy(cfg, str(tiny_model_dir))
    with pytest.raises(ConfigError, match="load_in_4bit .* needs lora: true"):
        build_config(None, values={"load_in_4bit": True, "lora": False})


def _study(tmp_path, model, **extra):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"model": str(model), "tasks": [{"id": "uti_classification", "n": 20}], **extra}))
    return path


def test_study_device_and_dtype_reach_training_and_evaluation(tmp_path, tiny_model_dir):
    from clinalign.study.config import load_study

    cfg = load_study(_study(tmp_path, tiny_model_dir, device="cpu", dtype="bfloat16",
                            dpo={"dtype": "float32"}, parallel="ddp"))
    entry = cfg.tasks[0]
    sft = cfg.train_settings("sft", entry)
    assert (sft["device"], sft["dtype"]) == ("cpu", "bfloat16") and "parallel" not in sft  # one process
    assert cfg.train_settings("dpo", entry)["dtype"] == "float32"  # a stage may override the study
    ev = cfg.eval_settings(entry)
    assert (ev.device, ev.dtype) == ("cpu", "bfloat16")
    entry.eval = {"dtype": "float32"}
    assert cfg.eval_settings(entry).dtype == "float32"


def test_study_file_with_an_impossible_device_fails_at_load(no_gpu, tmp_path, tiny_model_dir):
    from clinalign.study.config import load_study

    path = _study(tmp_path, tiny_model_dir, device="cuda")
    with pytest.raises(ConfigError, match=r"study.yaml: device: cuda was asked for"):
        load_study(path)
    with pytest.raises(ConfigError, match=r"study.yaml: dtype: Input should be 'auto', 'float32'"):
        load_study(_study(tmp_path, tiny_model_dir, dtype="half"))


def test_bf16_scoring_on_cpu_end_to_end(tiny_model_dir):
    """The tiny model scored in bfloat16 on CPU: real bf16 weights, probabilities that sum to 1, and
    log-likelihoods near (not equal to) float32's."""
    from clinalign.eval.predict import predict_records
    from clinalign.models.loading import load_model
    from clinalign.tasks import get_task

    assert {p.dtype for p in load_model(tiny_model_dir, dtype="bfloat16", device="cpu").parameters()} == {torch.bfloat16}
    task = get_task("uti_classification")
    records = generate(task, 6, seed=3)
    bf16 = predict_records(task, tiny_model_dir, records, batch_size=4, dtype="bfloat16", device="cpu")
    fp32 = predict_records(task, tiny_model_dir, records, batch_size=4, dtype="float32", device="cpu")
    assert len(bf16) == 6 and all(r["pred"] in ("yes", "no") for r in bf16)
    for a, b in zip(bf16, fp32, strict=True):
        assert sum(a["probs"].values()) == pytest.approx(1.0)
        for k in a["logliks"]:
            assert abs(a["logliks"][k] - b["logliks"][k]) < 0.5
    assert any(a["logliks"] != b["logliks"] for a, b in zip(bf16, fp32, strict=True))  # really bf16
