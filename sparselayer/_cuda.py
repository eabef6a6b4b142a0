"""Just-in-time build and load of the CUDA kernels in `csrc/` (sparselayer::* for the CUDA dispatch key).

The package installs as pure Python; the first op on a CUDA tensor calls `ensure_loaded()`, which compiles
`csrc/` with torch.utils.cpp_extension and ninja for the running GPU's architecture only (sm_90 on Hopper)
and loads it with `torch.ops.load_library`, registering TORCH_LIBRARY_IMPL(sparselayer, CUDA). Builds are
cached per user and architecture in ~/.cache/sparsesweep/torch_extensions/sm_XY (or under
$SPARSESWEEP_CACHE_DIR, else $XDG_CACHE_HOME/sparsesweep); cpp_extension rebuilds when a source changes.
Set SPARSELAYER_VERBOSE_BUILD=1 to see the compiler's output.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from . import _library  # noqa: F401  (the schemas must exist before the kernels register against them)

__all__ = ["ensure_loaded", "is_loaded", "build_directory", "CudaBuildError"]

SOURCES = ("panel.cu", "cache.cu", "spmm.cu", "spmm_sorted.cu", "spmm_sorted_bf16.cu", "spmm_window.cu", "spmm_t.cu", "sddmm.cu", "sddmm_sorted.cu", "register.cpp")
CSRC = Path(__file__).resolve().parent / "csrc"
_OPS = ("spmm", "spmm_t", "sddmm")
_lock = threading.Lock()
_loaded = False


class CudaBuildError(RuntimeError):
    """The CUDA kernels could not be built or loaded; the message says why and what to do."""


def is_loaded() -> bool:
    """True once every sparselayer op has a CUDA kernel registered."""
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"sparselayer::{op}", "CUDA") for op in _OPS)


def build_directory(arch: str) -> Path:
    """Per-user, per-architecture build cache, e.g. ~/.cache/sparsesweep/torch_extensions/sm_90."""
    root = os.environ.get("SPARSESWEEP_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsesweep"
    return base / "torch_extensions" / f"sm_{arch}"


def ensure_loaded() -> None:
    """Build (first time on this machine and GPU architecture) and load the CUDA kernels; a no-op after that.

    Raises CudaBuildError (a RuntimeError) naming the cause: no CUDA GPU, a CPU-only PyTorch, no nvcc, an
    nvcc whose CUDA major version differs from PyTorch's, no ninja, or a compile error (with an excerpt).
    """
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        if not is_loaded():
            _build_and_load()
        _loaded = True


def _build_and_load() -> None:
    if torch.version.cuda is None:
        raise CudaBuildError(
            f"sparselayer's CUDA kernels need a CUDA build of PyTorch; this one ({torch.__version__}) is CPU-only. "
            "Install a CUDA wheel of torch, or keep the tensors on the CPU."
        )
    if not torch.cuda.is_available():
        raise CudaBuildError("sparselayer's CUDA kernels need a CUDA GPU, but torch.cuda.is_available() is False.")
    from torch.utils import cpp_extension

    nvcc = _find_nvcc(cpp_extension.CUDA_HOME)
    nvcc_version = _nvcc_version(nvcc)
    if nvcc_version.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise CudaBuildError(
            f"nvcc at {nvcc} is CUDA {nvcc_version}, but PyTorch was built with CUDA {torch.version.cuda}: "
            f"point CUDA_HOME at a CUDA {torch.version.cuda.split('.')[0]}.x toolkit."
        )
    if not cpp_extension.is_ninja_available():
        raise CudaBuildError("building sparselayer's CUDA kernels needs ninja: pip install ninja")
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    build_dir = build_directory(arch)
    build_dir.mkdir(parents=True, exist_ok=True)
    verbose = os.environ.get("SPARSELAYER_VERBOSE_BUILD", "") not in ("", "0")
    saved = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # this GPU only: one short compile
    try:
        cpp_extension.load(
            name=f"sparselayer_cuda_sm{arch}",
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-lineinfo"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as e:  # cpp_extension raises RuntimeError/CalledProcessError/OSError with the log inside
        raise CudaBuildError(
            f"building sparselayer's CUDA kernels for sm_{arch} in {build_dir} with nvcc {nvcc_version} failed:\n"
            f"{_excerpt(str(e))}\n(set SPARSELAYER_VERBOSE_BUILD=1 for the full compiler output)"
        ) from e
    finally:
        if saved is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved
    if not is_loaded():
        raise CudaBuildError(f"the library built in {build_dir} loaded but registered no sparselayer CUDA kernels")


def _find_nvcc(cuda_home: str | None) -> str:
    candidates = [os.path.join(cuda_home, "bin", "nvcc")] if cuda_home else []
    candidates.append(shutil.which("nvcc") or "")
    for c in candidates:
        if c and os.path.exists(c):
            return c
    raise CudaBuildError(
        "sparselayer's CUDA kernels are compiled on first use, but no nvcc was found (CUDA_HOME is "
        f"{cuda_home!r}, and nvcc is not on PATH): install the CUDA {torch.version.cuda} toolkit and set CUDA_HOME."
    )


def _nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise CudaBuildError(f"could not run {nvcc} --version: {e}") from e
    return parse_nvcc_version(out, nvcc)


def parse_nvcc_version(text: str, nvcc: str = "nvcc") -> str:
    """'13.0' from `nvcc --version` output ('... Cuda compilation tools, release 13.0, V13.0.88')."""
    m = re.search(r"release (\d+)\.(\d+)", text)
    if not m:
        raise CudaBuildError(f"could not read the CUDA version from `{nvcc} --version`: {text.strip()[:200]!r}")
    return f"{m.group(1)}.{m.group(2)}"


def _excerpt(log: str, lines: int = 30) -> str:
    """The compiler's error lines (or the log's tail), short enough to read in a traceback."""
    all_lines = log.splitlines()
    errors = [ln for ln in all_lines if re.search(r"\berror\b", ln, re.IGNORECASE)]
    chosen = errors[:lines] if errors else all_lines[-lines:]
    return "\n".join(chosen)
