"""The 64-byte-aligned allocator that stock SPU 0.9.5 needs for FM32 rings.

SPU's FM32 matmuls crash (SIGSEGV) when glibc's 16-byte-aligned malloc blocks reach
Eigen's uint32 GEMM packing (see ``aligned_alloc.c``). The fix is a tiny allocator
preloaded at process start. This module finds or builds it, tells whether the running
process has it, and re-executes the process under it.

Entry points (CLI, tests, examples, make targets) call :func:`ensure_preloaded` first;
a process that creates an FM32 runtime without it gets :class:`AllocatorError` from
:func:`require_for_field`, never a segfault.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from ..errors import AllocatorError

_HERE = os.path.dirname(os.path.abspath(__file__))
_SOURCE = os.path.join(_HERE, "aligned_alloc.c")
_MARKER = "ditto_spu_aligned_allocator_active"
_REEXEC_FLAG = "DITTO_SPU_ALLOCATOR_REEXEC"
_LIB_NAME = "libditto_aligned_alloc.so"


def is_active() -> bool:
    """True if the aligned allocator is loaded into this process."""
    try:
        return bool(getattr(ctypes.CDLL(None), _MARKER, None) is not None)
    except (OSError, AttributeError):
        return False


def _candidates() -> list[str]:
    found = sorted(glob.glob(os.path.join(_HERE, "_aligned_alloc*.so")))
    found.append(os.path.join(_HERE, _LIB_NAME))
    found.append(os.path.join(_cache_dir(), _LIB_NAME))
    return found


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ditto-spu")


def build(dest: str | None = None) -> str:
    """Compile ``aligned_alloc.c`` with the system C compiler; return the library path."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise AllocatorError(
            "no C compiler found to build the aligned allocator: install gcc "
            "(apt-get install gcc) or reinstall ditto-spu with `make setup`"
        )
    dest = dest or os.path.join(_HERE, _LIB_NAME)
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(dest))
        os.close(fd)
    except OSError:
        dest = os.path.join(_cache_dir(), _LIB_NAME)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(dest))
        os.close(fd)
    cmd = [compiler, "-O2", "-fno-builtin", "-fPIC", "-shared", "-o", tmp, _SOURCE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise AllocatorError(
            f"building the aligned allocator failed ({' '.join(cmd)}):\n{proc.stderr}"
        )
    os.replace(tmp, dest)
    return dest


def library_path(*, build_if_missing: bool = True) -> str:
    """Path of the built allocator library (built on first use if needed)."""
    for path in _candidates():
        if os.path.exists(path):
            return path
    if not build_if_missing:
        raise AllocatorError("the aligned allocator is not built; run `make setup`")
    return build()


def _original_argv() -> list[str]:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
        argv = [p.decode() for p in parts if p]
        if argv:
            return argv
    except OSError:
        pass
    return [sys.executable] + sys.argv


def _cannot_reexec() -> str | None:
    """Why re-executing this process would not run the same program (None: it would)."""
    if "ipykernel" in sys.modules:
        return "a notebook kernel"
    if sys.flags.interactive or hasattr(sys, "ps1"):
        return "an interactive session"
    if sys.argv and sys.argv[0] in ("-", ""):
        return "a script read from standard input"
    return None


def _blas_coretype() -> str | None:
    """OpenBLAS kernel family for this CPU when OpenBLAS would not find one itself.

    numpy's bundled OpenBLAS identifies cores by CPU model; on virtual CPUs that report a
    generic "Intel Xeon Processor" it falls back to its slowest (Prescott) kernels, 5-8x
    slower in float64 GEMM, which the FXP32 matmul kernel relies on. We pick the family
    from the CPU's feature flags. An OPENBLAS_CORETYPE already set is never changed.
    """
    if os.environ.get("OPENBLAS_CORETYPE"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def ensure_preloaded() -> None:
    """Make sure this process runs under the allocator, re-executing it if needed.

    Re-execution replaces the process image with the same command line and
    ``LD_PRELOAD`` extended by the allocator. It happens at most once: the environment
    flag holds the process id, which ``execve`` keeps, so a re-executed process that still
    lacks the allocator raises — while a child process that merely inherited the flag (a
    different id, e.g. a command started from a preloaded script with ``LD_PRELOAD``
    removed) re-executes itself as usual.
    """
    coretype = _blas_coretype()
    if is_active() and coretype is None:
        return
    if os.environ.get(_REEXEC_FLAG) == str(os.getpid()):
        if is_active():
            return
        raise AllocatorError(
            "re-executed with LD_PRELOAD but the aligned allocator is still not active; "
            f"check that {library_path()} loads (ldd) and that nothing strips LD_PRELOAD"
        )
    why_not = _cannot_reexec()
    if why_not:
        if is_active():
            return  # only OpenBLAS's core type would change: run as we are
        raise AllocatorError(
            f"the aligned allocator FM32 rings need is not preloaded, and this process cannot be "
            f"re-executed with it ({why_not}). Start Python with LD_PRELOAD={library_path()} "
            "(for Jupyter, put it in the kernel's environment, e.g. `LD_PRELOAD=... jupyter lab`), "
            "or run a script file / the `ditto-spu` command"
        )
    env = dict(os.environ)
    if not is_active():
        path = library_path()
        env["LD_PRELOAD"] = ":".join(p for p in [path, env.get("LD_PRELOAD", "")] if p)
    env[_REEXEC_FLAG] = str(os.getpid())  # execve keeps the process id
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    sys.stdout.flush()
    sys.stderr.flush()
    argv = _original_argv()
    os.execve(sys.executable, [sys.executable] + argv[1:], env)


def require_for_field(field: str) -> None:
    """Raise :class:`AllocatorError` if ``field`` is FM32 and the allocator is missing."""
    if field == "FM32" and not is_active():
        raise AllocatorError(
            "an FM32 (FXP32) ring needs ditto-spu's 64-byte-aligned allocator preloaded, "
            "otherwise stock SPU 0.9.5 crashes in FM32 matmuls. Run through the "
            "`ditto-spu` command or `make`, call ditto_spu.native.ensure_preloaded() at the "
            "very start of your script, or start Python with "
            f"LD_PRELOAD={library_path()}"
        )
