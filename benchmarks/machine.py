"""The machine a benchmark ran on, recorded beside every timing.

CPUs of one kind differ up to 3x here (with or without AVX-512), so each result file names the
CPU model and its vector flags as `lscpu` reports them, and the GPU when one was used.
"""

from __future__ import annotations

import multiprocessing as mp
import platform
import subprocess
from typing import Any

VECTOR_FLAGS = ("avx", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def machine(gpu: bool = False) -> dict[str, Any]:
    """CPU model, the vector flags it has, core count, platform; the CUDA device if `gpu`."""
    info = _lscpu()
    flags = set(info.get("Flags", "").split())
    out: dict[str, Any] = {
        "cpu_model": info.get("Model name", platform.processor()),
        "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
        "cpu_count": mp.cpu_count(),
        "platform": platform.platform(),
    }
    if gpu:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            out["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "torch": torch.__version__, "cuda": torch.version.cuda}
    return out
