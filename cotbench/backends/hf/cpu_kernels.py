"""cotbench's CPU kernels (``cpu_kernels.c``), for bf16 and fp32: built on first use, called through ctypes.

- :func:`decode_attention`: one query token per row against a slot cache, each row read to its own length
  (a hand-written AVX512-BF16 path for bf16 at head dims 64 and 128; elsewhere plain C that the compiler
  vectorizes for this CPU: AVX2/FMA on most x86 machines).
- :func:`prefill_attention`: the same loop over a prefill pass, each prompt token a query of its own.
- :func:`rope_decode_attention`: the same, with the new token's rotary embedding and cache write in the call.
- :func:`lora_up`: a valve layer's LoRA up-projection at a per-row strength, added to the base output.
- :func:`add_rms_norm`: a residual add and the RMSNorm after it, with transformers' roundings.
- :func:`argmax`: greedy picks straight from the logits (bf16 without an fp32 copy first).

Each takes bf16 or fp32 tensors (:data:`KERNEL_DTYPES`) and calls that type's C function. In fp32 the results
are PyTorch's up to the order of fp32 sums (attention, the norm's mean, LoRA), not bit for bit:
``COTBENCH_CPU_KERNELS=0`` keeps every step on PyTorch, whose fp32 numbers the static path reproduces exactly.

The library is plain C with no torch headers, so it builds in about a second with the system C compiler,
for this CPU (``-march=native``), into the cotbench cache (``$COTBENCH_CACHE_DIR/kernels``). Whatever keeps
it from loading (no compiler, a missing source file, a compiler error, a loader error, a stale or foreign
library, a cache directory another user could write to), :func:`load_library` warns once and returns None,
and every caller stays on its PyTorch path (SDPA, addmm): slower, the same results up to rounding.
``COTBENCH_CPU_KERNELS=1`` makes that an error instead (for CI and benchmarks that must not fall back).
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
SOURCES = (SOURCE, Path(__file__).with_name("cpu_kernels_typed.h"))  # the .c includes the .h once per type
KERNEL_DTYPES = {torch.bfloat16: "bf16", torch.float32: "f32"}
# -ffast-math only to compile (it lets the dot products and exp vectorize). Compiled and linked in two steps
# because GCC before 13, given -ffast-math when linking a shared library, adds a constructor that switches
# the whole process to flush-to-zero.
FLAGS = ["-O3", "-ffast-math", "-fPIC", "-fopenmp"]
MARCH = "native"  # the instruction set: this CPU's (tests also build for x86-64-v3, AVX2 without AVX-512)
LINK_FLAGS = ["-shared", "-fopenmp"]
DISABLE_ENV = "COTBENCH_CPU_KERNELS"  # "0": never build or use them; "1": required, failing to load is an error


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


# cpu_kernels.c's MAX_DIM and MAX_GROUP: attention with larger heads, or more query heads per key/value head,
# is declined by the kernels and runs on SDPA
MAX_HEAD_DIM, MAX_GROUP = 256, 16


def attention_fits(head_dim: int, heads: int, kv_heads: int) -> bool:
    """Whether the attention kernels take a model with these heads (else its attention stays on SDPA)."""
    return head_dim <= MAX_HEAD_DIM and kv_heads > 0 and heads % kv_heads == 0 and heads // kv_heads <= MAX_GROUP


_P, _Q, _F, _I = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
_TYPED_SIGNATURES = {  # argument types of each C function, the same for both element types
    "decode_attention": [_P] * 5 + [_Q] * 6 + [_F, _I],
    "prefill_attention": [_P] * 5 + [_Q] * 7 + [_F, _I],
    "rope_decode_attention": [_P, _Q] * 3 + [_P] * 6 + [_Q] * 6 + [_F, _I],
    "lora_up": [_P, _Q, _P, _Q, _P, _Q, _P, _P] + [_Q] * 3 + [_I],
    "add_rms_norm": [_P] * 5 + [_Q] * 2 + [_F, _I],
    "argmax": [_P, _P, _Q, _Q, _I],
}
# cotbench_abi() in the C source must spell the same, in this order
SIGNATURES = {f"{name}_{suffix}": types for suffix in KERNEL_DTYPES.values() for name, types in _TYPED_SIGNATURES.items()}
_CODE = {_P: "p", _Q: "q", _F: "f", _I: "i"}


def expected_abi() -> str:
    return ";".join(f"{name}:{''.join(_CODE[t] for t in types)}" for name, types in SIGNATURES.items())


def _flags(march: str) -> list[str]:
    return [*FLAGS, f"-march={march}"]


def library_path(march: str = MARCH) -> Path | None:
    """Where this CPU's build lives in the cache (keyed on sources, compiler, flags, CPU); None: no compiler."""
    from cotbench.backends.loading import cache_dir

    compiler = _compiler()
    if compiler is None:
        return None
    try:
        sources = b"".join(path.read_bytes() for path in SOURCES)
    except OSError as exc:  # an install that left a source out: reinstalling is the fix, not a crash
        raise KernelBuildError(f"a kernel source file is missing from the installed cotbench ({exc.filename}); "
                               "reinstall cotbench") from None
    key = hashlib.sha256(sources + " ".join([compiler, *_flags(march), *LINK_FLAGS]).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"cpu_kernels-{key}.so"


def _private_directory(directory: Path) -> None:
    """Create ``directory`` for this user only, or check that an existing one is this user's and that no one
    else can write to it: a library loaded from it runs as this process, so nobody else may place one there."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_owned(directory)


def _check_owned(path: Path) -> None:
    info = path.lstat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KernelBuildError(f"{path} belongs to another user (uid {info.st_uid}): not loading code from it; "
                               f"remove it or point COTBENCH_CACHE_DIR at a directory of your own")
    if info.st_mode & 0o022:
        raise KernelBuildError(f"{path} is writable by other users (mode {info.st_mode & 0o777:o}): not loading "
                               f"code from it; run `chmod go-w {path}` or remove it")


def build_library(march: str = MARCH):
    """Build (or reuse the cached build) and load; raises ``KernelBuildError`` with the reason. A cached file
    that does not load, or whose ABI does not match ``SIGNATURES``, is rebuilt once. ``march``: the
    instruction set to build for (``-march=``); this CPU's unless a test asks for a narrower one."""
    library = library_path(march)
    if library is None:
        raise KernelBuildError("no C compiler found")
    _private_directory(library.parent)
    for attempt in (1, 2):
        if not library.exists():
            _compile(_compiler(), library, march)
        _check_owned(library)
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
        function = getattr(loaded, f"cotbench_{name}", None)
        if function is None:
            raise KernelBuildError(f"{library} has no function cotbench_{name}")
        function.restype, function.argtypes = ctypes.c_int, argtypes
    _check_one_openmp()
    return loaded


def _compile(compiler: str, library: Path, march: str) -> None:
    try:
        # a private staging directory (mode 0700) beside the cache file, then one rename: no other process or
        # user ever sees a half-written library, and a concurrent build just wins or loses the rename
        with tempfile.TemporaryDirectory(dir=library.parent) as staging:
            built, objects = Path(staging) / library.name, Path(staging) / "cpu_kernels.o"
            for command in ([compiler, *_flags(march), "-c", str(SOURCE), "-o", str(objects)],
                            [compiler, *LINK_FLAGS, str(objects), "-o", str(built), "-lm"]):
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
            os.chmod(built, 0o755)  # whatever the umask: never writable by others
            os.replace(built, library)
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


def load_library():
    """The built library (its functions typed), or None (with one warning saying why) where it cannot be
    built or loaded here. With ``COTBENCH_CPU_KERNELS=1`` the reason is raised as a ``CotbenchError`` instead."""
    return _load()[0]


def kernel_status() -> str:
    """"loaded", or why the kernels are not used in this process (for a run's ``engine_stats``)."""
    return _load()[1]


@functools.lru_cache(maxsize=1)  # one build, one load and one warning per process
def _load():
    setting = os.environ.get(DISABLE_ENV)
    if setting == "0":
        return None, f"switched off ({DISABLE_ENV}=0)"
    if platform.system() != "Linux":
        return None, f"not built on {platform.system()}"
    try:
        if _compiler() is None:
            raise KernelBuildError("no C compiler found (install gcc or clang, or set CC)")
        return build_library(), "loaded"
    except Exception as exc:  # noqa: BLE001 - any failure here must leave the run on PyTorch, never end it
        reason = f"{exc}" if isinstance(exc, KernelBuildError) else f"{type(exc).__name__}: {exc}"
        if setting == "1":
            from cotbench.errors import CotbenchError

            raise CotbenchError(f"cotbench's CPU kernels are required ({DISABLE_ENV}=1) but did not load: {reason}") from None
        warnings.warn(f"cotbench's CPU kernels did not load ({reason}); decode attention and valve layers stay on "
                      f"PyTorch (slower on CPU). Set {DISABLE_ENV}=0 to skip the build.", stacklevel=3)
        return None, reason




def _typed(library, name: str, dtype: torch.dtype):
    """The C function ``name`` for tensors of ``dtype`` (a key of :data:`KERNEL_DTYPES`)."""
    return getattr(library, f"cotbench_{name}_{KERNEL_DTYPES[dtype]}")


def attention_applies(query: torch.Tensor, key: torch.Tensor) -> bool:
    """bf16 or fp32 on CPU, query and cache of one type, dim contiguous: what the kernel handles."""
    return (query.device.type == "cpu" and query.dtype in KERNEL_DTYPES and key.dtype == query.dtype
            and key.stride(-1) == 1 and key.stride(-2) == key.shape[-1])


def decode_attention(library, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     lengths: torch.Tensor, scaling: float) -> torch.Tensor | None:
    """(rows, heads, 1, dim) queries against (rows, kv_heads, ≥ length, dim) keys/values, row i reading its
    first ``lengths[i]`` columns; returns (rows, 1, heads, dim), or None if the kernel declined the shapes."""
    rows, heads, _, dim = query.shape
    if (not attention_applies(query, key) or value.dtype != key.dtype or key.stride() != value.stride()
            or lengths.numel() != rows or int(lengths.max()) > key.shape[2]):
        return None  # the kernel trusts lengths and strides: anything else goes to SDPA
    query = query.contiguous()
    out = torch.empty((rows, 1, heads, dim), dtype=query.dtype)
    lengths = lengths.to(torch.int32).contiguous()
    status = _typed(library, "decode_attention", query.dtype)(
        query.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), lengths.data_ptr(), rows, heads,
        key.shape[1], dim, key.stride(0), key.stride(1), scaling, torch.get_num_threads())
    return None if status else out


def prefill_attention(library, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      lengths: torch.Tensor, scaling: float) -> torch.Tensor | None:
    """A prefill pass's attention with decode's arithmetic: (rows, heads, tokens, dim) queries against (rows,
    kv_heads, ≥ width, dim) keys/values, query token t of row i reading the row's first ``lengths[i, t]`` columns
    (its position + 1; 0 for padding, whose output is unused). Returns (rows, tokens, heads, dim), or None if
    the kernel declined the shapes. Each token's result depends on its own row's keys up to its length only:
    not on padding, batch mates, the pass's width or the thread count (SDPA's depends on the first three)."""
    rows, heads, tokens, dim = query.shape
    if (not attention_applies(query, key) or value.dtype != key.dtype or key.stride() != value.stride()
            or tuple(lengths.shape) != (rows, tokens) or int(lengths.max()) > key.shape[2] or key.shape[0] != rows):
        return None
    query = query.transpose(1, 2).contiguous()
    out = torch.empty((rows, tokens, heads, dim), dtype=query.dtype)
    lengths = lengths.to(torch.int32).contiguous()
    status = _typed(library, "prefill_attention", query.dtype)(
        query.data_ptr(), key.data_ptr(), value.data_ptr(), out.data_ptr(), lengths.data_ptr(), rows, tokens, heads,
        key.shape[1], dim, key.stride(0), key.stride(1), scaling, torch.get_num_threads())
    return None if status else out


def rope_decode_attention(library, query: torch.Tensor, key_new: torch.Tensor, value_new: torch.Tensor,
                          cos: torch.Tensor, sin: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                          lengths: torch.Tensor, scaling: float, kv_heads: int) -> torch.Tensor | None:
    """A decode step's attention from the new token's projections: rotary embedding on its query and key,
    key and value written into the cache at column ``lengths[i] - 1`` of slot i, then :func:`decode_attention`.

    ``query`` (rows, heads·dim), ``key_new``/``value_new`` (rows, kv_heads·dim): all of one kernel dtype, unit
    column stride, any row stride; ``cos``/``sin`` (rows, dim) as the model's rotary embedding gives them;
    ``key_cache`` and ``value_cache`` a layer's (slots, kv_heads, capacity, dim) buffers; idle rows have length
    0 and write nothing. Returns (rows, heads·dim), or None if the kernel declined (the cache may then hold
    some of the new keys already; writing them again gives the same)."""
    rows, dim = cos.shape[0], cos.shape[-1]
    tensors = (query, key_new, value_new, cos, sin, key_cache, value_cache)
    if (query.dtype not in KERNEL_DTYPES or any(t.dtype != query.dtype or t.stride(-1) != 1 for t in tensors)
            or not cos.is_contiguous() or not sin.is_contiguous() or key_cache.stride() != value_cache.stride()
            or key_cache.stride(-2) != dim or lengths.numel() != rows or int(lengths.max()) > key_cache.shape[2]
            or key_cache.shape[0] < rows or key_new.shape[-1] != kv_heads * dim):
        return None
    heads = query.shape[-1] // dim
    out = torch.empty((rows, heads * dim), dtype=query.dtype)
    lengths = lengths.to(torch.int32).contiguous()
    status = _typed(library, "rope_decode_attention", query.dtype)(
        query.data_ptr(), query.stride(0), key_new.data_ptr(), key_new.stride(0), value_new.data_ptr(),
        value_new.stride(0), cos.data_ptr(), sin.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
        out.data_ptr(), lengths.data_ptr(), rows, heads, kv_heads, dim, key_cache.stride(0), key_cache.stride(1),
        scaling, torch.get_num_threads())
    return None if status else out


def lora_up(library, base: torch.Tensor, low_rank: torch.Tensor, scale: torch.Tensor, up_t: torch.Tensor) -> torch.Tensor | None:
    """``base + scale · low_rank @ up_t`` as a new contiguous (rows, n) tensor, rounded once to base's dtype.

    ``base`` (rows, n) and ``low_rank`` (rows, rank) are column slices of one GEMM output (bf16 or fp32, unit
    column stride, any row stride); ``scale`` is fp32, one value per row or per group of ``rows / len(scale)``
    consecutive rows (a prompt's tokens); ``up_t`` is B transposed, (rank, n) fp32 contiguous. None where
    the shapes are not the kernel's: the caller falls back to addmm."""
    rows, n = base.shape
    if (base.dtype not in KERNEL_DTYPES or low_rank.dtype != base.dtype or base.stride(1) != 1
            or low_rank.stride(1) != 1 or scale.dtype != torch.float32 or not scale.is_contiguous()
            or up_t.dtype != torch.float32 or not up_t.is_contiguous() or rows % scale.numel()):
        return None
    out = torch.empty((rows, n), dtype=base.dtype)
    status = _typed(library, "lora_up", base.dtype)(
        base.data_ptr(), base.stride(0), low_rank.data_ptr(), low_rank.stride(0), scale.data_ptr(),
        rows // scale.numel(), up_t.data_ptr(), out.data_ptr(), rows, n, low_rank.shape[1], torch.get_num_threads())
    return None if status else out


def add_rms_norm(library, residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(hidden, normed): ``hidden = residual + delta`` and LlamaRMSNorm of it, with transformers' roundings,
    in one pass; ``delta`` None: only the norm. None where the tensors are not of one kernel dtype and
    contiguous."""
    tensors = (residual, weight) if delta is None else (residual, delta, weight)
    if residual.dtype not in KERNEL_DTYPES or any(t.dtype != residual.dtype or not t.is_contiguous() for t in tensors) or (
            delta is not None and delta.shape != residual.shape) or residual.shape[-1] != weight.numel():
        return None
    n = weight.numel()
    hidden = residual if delta is None else torch.empty_like(residual)
    normed = torch.empty_like(residual)
    _typed(library, "add_rms_norm", residual.dtype)(
        residual.data_ptr(), None if delta is None else delta.data_ptr(), hidden.data_ptr(), normed.data_ptr(),
        weight.data_ptr(), residual.numel() // n, n, eps, torch.get_num_threads())
    return hidden, normed


def argmax(library, logits: torch.Tensor) -> list[int] | None:
    """``logits.argmax(-1).tolist()`` for (rows, vocab) bf16 or fp32 logits (bf16 without first converting them
    to fp32); None where they are not of a kernel dtype and contiguous."""
    if logits.dtype not in KERNEL_DTYPES or logits.dim() != 2 or not logits.is_contiguous():
        return None
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    _typed(library, "argmax", logits.dtype)(logits.data_ptr(), out.data_ptr(), logits.shape[0], logits.shape[1],
                                            torch.get_num_threads())
    return out.tolist()
