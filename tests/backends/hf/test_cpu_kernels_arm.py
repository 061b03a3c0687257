"""cotbench's C kernels on Arm (Graviton, Ampere; Apple Silicon runs macOS, where they step aside): built with
Debian's aarch64 cross compiler and the product's own flags, and run under qemu-user against this machine's
build on the same inputs (tests/backends/hf/kernel_driver.c). Skipped where the cross tools are missing,
unless COTBENCH_REQUIRE_CROSS=1 (CI installs them)."""
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from cotbench.backends.hf import cpu_kernels

CROSS, QEMU, SYSROOT = "aarch64-linux-gnu-gcc", "qemu-aarch64", "/usr/aarch64-linux-gnu"
DRIVER = Path(__file__).with_name("kernel_driver.c")
SECTIONS = [("fp32 attention", 3 * 6 * 64), ("bf16 attention", 3 * 6 * 64), ("fp32 add + RMSNorm", 2 * 3 * 96),
            ("fp32 LoRA up-projection", 3 * 96), ("fp32 argmax", 3), ("bf16 argmax", 3)]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        from conftest import unavailable

        unavailable("CROSS", f"{tool} is not installed (apt-get install gcc-aarch64-linux-gnu qemu-user)")


def _build(compiler: str, march: str, out: Path, extra=()) -> Path:
    command = [compiler, *cpu_kernels.FLAGS, f"-march={march}", *extra, str(DRIVER), str(cpu_kernels.SOURCE),
               "-lm", "-o", str(out)]
    subprocess.run([c for c in command if c != "-fPIC"], check=True, capture_output=True, text=True, timeout=180)
    return out


def _outputs(command: list[str]) -> list[float]:
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return [float(line) for line in done.stdout.split()]


def test_kernels_build_for_aarch64(tmp_path):
    _need(CROSS)
    for march in ("armv8-a", "armv8.2-a+bf16", "armv9-a"):  # Graviton 2, 3, 4
        library = tmp_path / f"cpu_kernels-{march}.so"
        subprocess.run([CROSS, *cpu_kernels.FLAGS, f"-march={march}", "-c", str(cpu_kernels.SOURCE), "-o",
                        str(tmp_path / "k.o")], check=True, capture_output=True, text=True, timeout=180)
        subprocess.run([CROSS, *cpu_kernels.LINK_FLAGS, str(tmp_path / "k.o"), "-o", str(library), "-lm"],
                       check=True, capture_output=True, text=True, timeout=180)
        assert library.read_bytes()[18] == 0xB7  # ELF e_machine: EM_AARCH64


def test_aarch64_build_computes_what_this_machines_build_computes(tmp_path):
    _need(CROSS)
    _need(QEMU)
    if platform.machine() not in ("x86_64", "AMD64") or cpu_kernels._compiler() is None:
        pytest.skip("compares against an x86-64 build made here")
    native = _outputs([str(_build(cpu_kernels._compiler(), "native", tmp_path / "driver-native"))])
    arm = _outputs([QEMU, "-L", SYSROOT, str(_build(CROSS, "armv8-a", tmp_path / "driver-arm"))])
    assert len(native) == len(arm) == sum(n for _, n in SECTIONS)
    start = 0
    for name, n in SECTIONS:
        ours, theirs = native[start:start + n], arm[start:start + n]
        start += n
        if "argmax" in name:
            assert ours == theirs, name
            continue
        # fp32 sums vectorize differently on each CPU; bf16 outputs may then round one ulp (2^-8) apart
        rtol = 2 ** -7 if "bf16" in name else 1e-5
        worst = max(abs(a - b) - rtol * abs(a) for a, b in zip(ours, theirs))
        assert worst <= 1e-5, (name, worst)
