"""The one device and precision policy of clinalign: every model (SFT, DPO, the reference pass, label
scoring, generation) is placed by :func:`resolve`, so one study file means the same thing everywhere.

``device: auto`` is CUDA when PyTorch sees a GPU, else CPU; ``dtype: auto`` is bfloat16 on a GPU that
supports it and float32 otherwise (CPU, or an older GPU: float16 training would need loss scaling,
which the loop does not do). A combination that cannot run is a :class:`ConfigError` naming the option,
raised before any model is loaded. ``dtype: bfloat16`` on a CPU pays off only where the CPU multiplies
bfloat16 natively (AMX or AVX512-BF16: several times float32's matmul rate); elsewhere it is emulated and
slower than float32, which :func:`resolve` says once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from clinalign.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Placement:
    device: Any  # torch.device: cuda:LOCAL_RANK under torchrun
    dtype: str  # "float32" | "bfloat16" | "float16"

    @property
    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def identity(self) -> dict[str, str]:
        """What a cached output (a stage, reference log-probs) depends on: the device kind, not this
        rank's index, and the dtype. ``auto`` on a CPU and on a GPU are different runs."""
        return {"device": self.device.type, "dtype": self.dtype}


def cpu_has_bf16_matmul() -> bool:
    """AMX tiles or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later)."""
    import torch

    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def resolve(device: str = "auto", dtype: str = "auto", load_in_4bit: bool = False) -> Placement:
    """Where and in what precision a model runs; see the module docstring."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: {device!r} is not one of auto, cpu, cuda")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"dtype: {dtype!r} is not one of auto, float32, bfloat16, float16")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ConfigError("device: cuda was asked for, but PyTorch sees no CUDA GPU here "
                          "(torch.cuda.is_available() is False); use device: auto or cpu")
    kind = ("cuda" if cuda else "cpu") if device == "auto" else device
    if dtype == "auto":
        dtype = "bfloat16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if kind == "cpu" and dtype == "float16":
        raise ConfigError("dtype: float16 does not run on CPU (no float16 matmul kernels there); "
                          "use float32 or bfloat16, or device: cuda")
    if kind == "cpu" and dtype == "bfloat16" and not cpu_has_bf16_matmul():
        warnings.warn("dtype: bfloat16 on a CPU without AMX or AVX512-BF16 is emulated and runs slower than "
                      "float32; set dtype: float32 on this machine", RuntimeWarning, stacklevel=1)
    if kind == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype: bfloat16 is not supported by this GPU ({torch.cuda.get_device_name()}); "
                          "use float32 (or float16)")
    if load_in_4bit:
        if kind != "cuda":
            raise ConfigError("load_in_4bit: QLoRA's 4-bit base weights (bitsandbytes) need a CUDA GPU; "
                              "on CPU use load_in_4bit: false (LoRA on float32 or bfloat16 weights)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("load_in_4bit: needs the bitsandbytes package: pip install 'clinalign[qlora]'") from None
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if kind == "cuda" else torch.device("cpu")
    return Placement(dev, dtype)
