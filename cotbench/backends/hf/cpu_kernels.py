"""cotbench's bf16 CPU kernels (``cpu_kernels.c``): built on first use, called through ctypes.

- :func:`decode_attention`: one query token per row against a slot cache, each row read to its own length
  (an AVX512-BF16 path for head dims 64 and 128, a portable loop otherwise).
- :func:`rope_decode_attention`: the same, with the new token's rotary embedding and cache write in the call.
- :func:`lora_up`: a valve layer's LoRA up-projection at a per-row strength, added to the base output.
- :func:`add_rms_norm`: a residual add and the RMSNorm after it, with transformers' roundings.
- :func:`argmax`: greedy picks straight from bf16 logits.

The library is plain C with no torch headers, so it builds in about a second with the system C compiler,
for this CPU (``-march=native``), into the cotbench cache (``$COTBENCH_CACHE_DIR/kernels``). Where no
compiler is found or the build fails, :func:`load_library` warns once and returns None, and every caller
stays on its PyTorch path (SDPA, addmm): slower, the same results up to bf16 rounding.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# -ffast-math only to compile (it lets the dot products and exp vectorize). Compiled and linked in two steps
# because GCC before 13, given -ffast-math when linking a shared library, adds a constructor that switches
# the whole process to flush-to-zero.
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-fopenmp"]
LINK_FLAGS = ["-shared", "-fopenmp"]
DISABLE_ENV = "COTBENCH_CPU_KERNELS"  # "0": never build or use them


def _compiler() -> str | None:
    for candidate in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate.split()[0]
    return None


def _cpu_signature() -> str:
    """-march=native code runs only on CPUs like this one: a cache shared between machines keys on it."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return f"{platform.machine()}:{flags}"


class KernelBuildError(RuntimeError):
    """The kernels could not be built or loaded here (the compiler's first error line, or the ABI mismatch)."""


_P, _Q, _F, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
SIGNATURES = {  # argument types of each C function; cotbench_abi() in the C source must spell the same
    "decode_attention_bf16": [_P] * 5 + [_Q] * 6 + [_F, _I],
    "rope_decode_attention_bf16": [_P, _Q] * 3 + [_P] * 6 + [_Q] * 6 + [_F, _I],
    "lora_up_bf16": [_P, _Q, _P, _Q, _P, _Q, _P, _P] + [_Q] * 3 + [_I],
    "add_rms_norm_bf16": [_P] * 5 + [_Q] * 2 + [_F, _I],
    "argmax_bf16": [_P, _P, _Q, _Q, _I],
}
_CODE = {_P: "p", _Q: "q", _F: "f", _I: "i"}


def expected_abi() -> str:
    return ";".join(f"{name}:{''.join(_CODE[t] for t in types)}" for name, types in SIGNATURES.items())


def library_path() -> Path | None:
    """Where this CPU's build lives in the cache (keyed on source, compiler, flags, CPU); None: no compiler."""
    from cotbench.backends.loading import cache_dir

    compiler = _compiler()
    if compiler is None:
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([compiler, *FLAGS, *LINK_FLAGS]).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"cpu_kernels-{key}.so"


def build_library():
    """Build (or reuse the cached build) and load; raises ``KernelBuildError`` with the reason. A cached file
    that does not load, or whose ABI does not match ``SIGNATURES``, is rebuilt once."""
    library = library_path()
    if library is None:
        raise KernelBuildError("no C compiler found")
    for attempt in (1, 2):
        if not library.exists():
            _compile(_compiler(), library)
        try:
            loaded = ctypes.CDLL(str(library))
            found = "none"
            if hasattr(loaded, "cotbench_abi"):
                loaded.cotbench_abi.restype, loaded.cotbench_abi.argtypes = ctypes.c_char_p, []
                found = loaded.cotbench_abi().decode()
        except OSError as exc:
            found, loaded = f"unloadable ({exc})", None
        if found == expected_abi():
            break
        if attempt == 2:
            raise KernelBuildError(f"the built library's ABI does not match cotbench's ({found} != {expected_abi()})")
        library.unlink(missing_ok=True)  # stale or damaged: build it again, once
    for name, argtypes in SIGNATURES.items():
        function = getattr(loaded, f"cotbench_{name}")
        function.restype, function.argtypes = ctypes.c_int, argtypes
    _check_one_openmp()
    return loaded


def _compile(compiler: str, library: Path) -> None:
    library.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=library.parent) as staging:
            built, objects = Path(staging) / library.name, Path(staging) / "cpu_kernels.o"
            for command in ([compiler, *FLAGS, "-c", str(SOURCE), "-o", str(objects)],
                            [compiler, *LINK_FLAGS, str(objects), "-o", str(built), "-lm"]):
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
            os.replace(built, library)  # atomic: a concurrent build just wins or loses the rename
    except (OSError, subprocess.SubprocessError) as exc:
        # the compiler's first error line, not its whole output: the message must stay readable
        detail = next((line for line in (getattr(exc, "stderr", "") or "").splitlines() if "error" in line), str(exc))
        raise KernelBuildError(f"could not build with {compiler}: {detail}") from None


def openmp_runtimes() -> list[str]:
    """Files of the OpenMP runtimes loaded in this process (threadpoolctl). Two runtimes (torch's libgomp and
    another) would each spin their own threads on the same cores."""
    from threadpoolctl import threadpool_info

    return sorted({info["filepath"] for info in threadpool_info() if info.get("user_api") == "openmp"})


def _check_one_openmp() -> None:
    runtimes = openmp_runtimes()
    if len(runtimes) > 1:
        warnings.warn(f"{len(runtimes)} OpenMP runtimes are loaded ({', '.join(runtimes)}): their threads compete "
                      "for the same cores. Build with the compiler torch was built with (gcc), or set "
                      f"{DISABLE_ENV}=0.", stacklevel=3)


@functools.lru_cache(maxsize=1)  # one build and one load per process
def load_library():
    """The built library (its functions typed), or None (with a warning saying why) where it cannot be built here."""
    if os.environ.get(DISABLE_ENV) == "0" or platform.system() != "Linux":
        return None
    if _compiler() is None:
        warnings.warn("no C compiler found: decode attention and valve layers stay on PyTorch (slower on CPU). "
                      "Install gcc or clang, or set CC, to build cotbench's kernels.", stacklevel=2)
        return None
    try:
        return build_library()
    except KernelBuildError as exc:
        warnings.warn(f"{exc}; decode attention and valve layers stay on PyTorch (slower on CPU). "
                      f"Set {DISABLE_ENV}=0 to skip the build.", stacklevel=2)
        return None


def attention_applies(query: torch.Tensor, key: torch.Tensor) -> bool:
    """bf16 on CPU, dim contiguous: what the kernel handles. fp32 stays on SDPA, so fp32 greedy outputs
    match the static path's exactly."""
    return (query.device.type == "cpu" and query.dtype == torch.bfloat16 and key.dtype == torch.bfloat16
            and key.stride(-1) == 1 and key.stride(-2) == key.shape[-1])


def decode_attention(library, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     lengths: torch.Tensor, scaling: float) -> torch.Tensor | None:
    """(rows, heads, 1, dim) queries against (rows, kv_heads, ≥ length, dim) keys/values, row i reading its
    first ``lengths[i]`` columns; returns (rows, 1, heads, dim), or None if the kernel declined the shapes."""
    rows, heads, _, dim = query.shape
    if key.stride() != value.stride() or lengths.numel() != rows or int(lengths.max()) > key.shape[2]:
        return None  # the kernel trusts lengths and strides: anything else goes to SDPA
    query = query.contiguous()
    out = torch.empty((rows, 1, heads, dim), dtype=query.dtype)
    lengths = lengths.to(torch.int32).contiguous()
    status = library.cotbench_decode_attention_bf16(
        query.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), lengths.data_ptr(), rows, heads,
        key.shape[1], dim, key.stride(0), key.stride(1), scaling, torch.get_num_threads())
    return None if status else out


def rope_decode_attention(library, query: torch.Tensor, key_new: torch.Tensor, value_new: torch.Tensor,
                          cos: torch.Tensor, sin: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                          lengths: torch.Tensor, scaling: float, kv_heads: int) -> torch.Tensor | None:
    """A decode step's attention from the new token's projections: rotary embedding on its query and key,
    key and value written into the cache at column ``lengths[i] - 1`` of slot i, then :func:`decode_attention`.

    ``query`` (rows, heads·dim), ``key_new``/``value_new`` (rows, kv_heads·dim): bf16, unit column stride, any
    row stride; ``cos``/``sin`` (rows, dim) as the model's rotary embedding gives them; ``key_cache`` and
    ``value_cache`` a layer's (slots, kv_heads, capacity, dim) buffers; idle rows have length 0 and write
    nothing. Returns (rows, heads·dim), or None if the kernel declined (the cache may then hold some of the
    new keys already; writing them again gives the same)."""
    rows, dim = cos.shape[0], cos.shape[-1]
    tensors = (query, key_new, value_new, cos, sin, key_cache, value_cache)
    if (any(t.dtype != torch.bfloat16 or t.stride(-1) != 1 for t in tensors) or not cos.is_contiguous()
            or not sin.is_contiguous() or key_cache.stride() != value_cache.stride()
            or key_cache.stride(-2) != dim or lengths.numel() != rows or int(lengths.max()) > key_cache.shape[2]
            or key_cache.shape[0] < rows or key_new.shape[-1] != kv_heads * dim):
        return None
    heads = query.shape[-1] // dim
    out = torch.empty((rows, heads * dim), dtype=torch.bfloat16)
    lengths = lengths.to(torch.int32).contiguous()
    status = library.cotbench_rope_decode_attention_bf16(
        query.data_ptr(), query.stride(0), key_new.data_ptr(), key_new.stride(0), value_new.data_ptr(),
        value_new.stride(0), cos.data_ptr(), sin.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
        out.data_ptr(), lengths.data_ptr(), rows, heads, kv_heads, dim, key_cache.stride(0), key_cache.stride(1),
        scaling, torch.get_num_threads())
    return None if status else out


def lora_up(library, base: torch.Tensor, low_rank: torch.Tensor, scale: torch.Tensor, up_t: torch.Tensor) -> torch.Tensor | None:
    """``base + scale · low_rank @ up_t`` as a new contiguous (rows, n) tensor, rounded to bf16 once.

    ``base`` (rows, n) and ``low_rank`` (rows, rank) are bf16 column slices of one GEMM output (unit column
    stride, any row stride); ``scale`` is fp32, one value per row or per group of ``rows / len(scale)``
    consecutive rows (a prompt's tokens); ``up_t`` is B transposed, (rank, n) fp32 contiguous. None where
    the shapes are not the kernel's: the caller falls back to addmm."""
    rows, n = base.shape
    if (base.dtype != torch.bfloat16 or low_rank.dtype != torch.bfloat16 or base.stride(1) != 1
            or low_rank.stride(1) != 1 or scale.dtype != torch.float32 or not scale.is_contiguous()
            or up_t.dtype != torch.float32 or not up_t.is_contiguous() or rows % scale.numel()):
        return None
    out = torch.empty((rows, n), dtype=torch.bfloat16)
    status = library.cotbench_lora_up_bf16(
        base.data_ptr(), base.stride(0), low_rank.data_ptr(), low_rank.stride(0), scale.data_ptr(),
        rows // scale.numel(), up_t.data_ptr(), out.data_ptr(), rows, n, low_rank.shape[1], torch.get_num_threads())
    return None if status else out


def add_rms_norm(library, residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(hidden, normed): ``hidden = residual + delta`` and LlamaRMSNorm of it, with transformers' bf16
    roundings, in one pass; ``delta`` None: only the norm. None where the tensors are not bf16 and contiguous."""
    tensors = (residual, weight) if delta is None else (residual, delta, weight)
    if any(t.dtype != torch.bfloat16 or not t.is_contiguous() for t in tensors) or (
            delta is not None and delta.shape != residual.shape) or residual.shape[-1] != weight.numel():
        return None
    n = weight.numel()
    hidden = residual if delta is None else torch.empty_like(residual)
    normed = torch.empty_like(residual)
    library.cotbench_add_rms_norm_bf16(residual.data_ptr(), None if delta is None else delta.data_ptr(),
                                       hidden.data_ptr(), normed.data_ptr(), weight.data_ptr(),
                                       residual.numel() // n, n, eps, torch.get_num_threads())
    return hidden, normed


def argmax(library, logits: torch.Tensor) -> list[int] | None:
    """``logits.argmax(-1).tolist()`` for (rows, vocab) bf16 logits, without first converting them to fp32;
    None where they are not bf16 and contiguous."""
    if logits.dtype != torch.bfloat16 or logits.dim() != 2 or not logits.is_contiguous():
        return None
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    library.cotbench_argmax_bf16(logits.data_ptr(), out.data_ptr(), logits.shape[0], logits.shape[1],
                                 torch.get_num_threads())
    return out.tolist()
