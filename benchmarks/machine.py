"""What every benchmark records about its machine, where its results go (one folder per CPU kind, so a figure
of one kind is never read as another's: benchmarks/results/<kind>/), and the machine's matmul ceiling that
decode speeds are quoted against."""
from __future__ import annotations

import os
import platform
import re
import time
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
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": code_commit(), "cpu": name, "kind": cpu_kind(),
            "simd_flags": flags, "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(),
            "load_average": os.getloadavg(),
            "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_"))}}


def code_commit() -> str:
    """The checkout's commit, "+dirty" when the package or benchmarks differ from it: what code was measured."""
    import subprocess

    root = RESULTS.parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cotbench", "benchmarks/*.py"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


# Held to AVX2: on an AVX-512 machine, the code paths an AVX2-only CPU takes. oneDNN, MKL and ATen read these when
# torch loads, so they go into a child process's environment; cotbench's kernels are built for x86-64-v3 by
# hold_kernels_to_avx2() in that process, before its first kernel call. The figures stay this machine's.
AVX2_HOLD_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def hold_kernels_to_avx2() -> None:
    import cotbench.backends.hf.cpu_kernels as kernels

    kernels.MARCH = "x86-64-v3"
    kernels.build_library.__defaults__ = ("x86-64-v3",)  # the default argument was read when it was defined


# Python code for `python -c` that holds the kernels before the rest of the program runs (with AVX2_HOLD_ENV in the
# child's environment); HELD_CLI_CODE is `cotbench ...` so held: python -c HELD_CLI_CODE <cotbench's arguments>
HOLD_KERNELS_CODE = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                     "from machine import hold_kernels_to_avx2; hold_kernels_to_avx2(); ")
HELD_CLI_CODE = HOLD_KERNELS_CODE + "from cotbench.cli import main; sys.exit(main(sys.argv[1:]))"


def results_dir() -> Path:
    path = RESULTS / cpu_kind()
    path.mkdir(parents=True, exist_ok=True)
    return path


# SmolLM2-135M's linear layers (in, out): q, k, v, o, gate, up, down per layer (30 of them), and the output layer
MODEL_LAYERS = [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)]
OUTPUT_LAYER, N_LAYERS = (576, 49152), 30


def matmul_ceiling(dtype: str, rows: int = 256) -> dict:
    """Matmul FLOP/s two ways, best of three rounds each: 2048³ (the textbook figure) and the model's own decode
    shapes at ``rows`` rows (every linear layer of a decode step, each weighted by how often a step runs it).
    Decode is quoted against the higher of the two."""
    import torch
    import torch.nn.functional as F

    from cotbench.backends.hf import pick_dtype

    torch_dtype = pick_dtype(dtype, "cpu")

    def best_rate(step, flops: float, reps: int) -> float:
        for _ in range(3):
            step()
        best = 0.0
        for _ in range(3):  # best of three rounds: the machine is shared
            started = time.perf_counter()
            for _ in range(reps):
                step()
            best = max(best, flops * reps / (time.perf_counter() - started))
        return best

    n = 2048
    a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)
    square = best_rate(lambda: a @ b, 2 * n ** 3, 8)
    weights = [torch.randn(o, i, dtype=torch_dtype) for i, o in MODEL_LAYERS]
    output = torch.randn(OUTPUT_LAYER[1], OUTPUT_LAYER[0], dtype=torch_dtype)
    x = {i: torch.randn(rows, i, dtype=torch_dtype) for i in {i for i, _ in MODEL_LAYERS}}

    def decode_matmuls():
        for _ in range(N_LAYERS):
            for w in weights:
                F.linear(x[w.shape[1]], w)
        F.linear(x[576], output)

    flops = 2 * rows * (N_LAYERS * sum(i * o for i, o in MODEL_LAYERS) + OUTPUT_LAYER[0] * OUTPUT_LAYER[1])
    shapes = best_rate(decode_matmuls, flops, 2)
    return {"dtype": str(torch_dtype).replace("torch.", ""), "matmul_gflops": round(max(square, shapes) / 1e9, 1),
            "square_2048_gflops": round(square / 1e9, 1), "model_shapes_gflops": round(shapes / 1e9, 1),
            "model_shapes_rows": rows, "threads": torch.get_num_threads()}
