"""What every benchmark records about its machine, and where its results go: one folder per CPU kind, so a
figure of one kind is never read as another's (benchmarks/results/<kind>/)."""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_kind() -> str:
    """amx-bf16 | avx512-bf16 | avx512 | avx2 | arm64 | other: what decides which kernels and dtype cotbench uses.
    AMX (Sapphire Rapids and later Xeons) is a kind of its own: its bf16 matmuls run ~2.5x those of an
    AVX512-BF16 CPU without it (Zen 4), so its ceilings and speeds are not that kind's."""
    try:
        flags = set(re.findall(r"\S+", next(l for l in Path("/proc/cpuinfo").read_text().splitlines()
                                            if l.startswith(("flags", "Features"))).split(":", 1)[1]))
    except (OSError, StopIteration):
        return "arm64" if platform.machine() in ("arm64", "aarch64") else "other"
    if "amx_bf16" in flags:
        return "amx-bf16"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "arm64" if platform.machine() in ("arm64", "aarch64") else "other"


def machine_record() -> dict:
    from cotbench.threads import usable_cpus

    name, flags = platform.processor(), []
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(l.split(":", 1)[1].strip() for l in info if l.startswith("model name"))
        flags = sorted({f for l in info if l.startswith("flags") for f in l.split(":", 1)[1].split()
                        if f.startswith(("avx", "amx", "fma", "f16c"))})
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "kind": cpu_kind(), "simd_flags": flags, "cpu_count": os.cpu_count(),
            "usable_cpus": usable_cpus(), "load_average": os.getloadavg(),
            "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))}}


def results_dir() -> Path:
    path = RESULTS / cpu_kind()
    path.mkdir(parents=True, exist_ok=True)
    return path
