"""sparselayer._cuda on any machine: the build's error messages, version parsing and cache location."""

import pytest
import torch

from sparselayer import _cuda

NVCC_13 = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Wed_Aug_20_01:58:59_PM_PDT_2025
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0
"""


def test_parse_nvcc_version():
    assert _cuda.parse_nvcc_version(NVCC_13) == "13.0"
    with pytest.raises(_cuda.CudaBuildError, match="could not read the CUDA version"):
        _cuda.parse_nvcc_version("command not found")


def test_build_directory_is_per_user_and_arch(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSESWEEP_CACHE_DIR", str(tmp_path))
    assert _cuda.build_directory("90") == tmp_path / "torch_extensions" / "sm_90"
    monkeypatch.delenv("SPARSESWEEP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cuda.build_directory("80") == tmp_path / "xdg" / "sparsesweep" / "torch_extensions" / "sm_80"


def test_excerpt_keeps_error_lines():
    log = "\n".join([f"line {i}" for i in range(100)] + ["spmm.cu(12): error: identifier x is undefined"])
    assert _cuda._excerpt(log) == "spmm.cu(12): error: identifier x is undefined"
    assert _cuda._excerpt("a\nb") == "a\nb"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
def test_ensure_loaded_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="CUDA"):
        _cuda.ensure_loaded()
    assert not _cuda.is_loaded()
