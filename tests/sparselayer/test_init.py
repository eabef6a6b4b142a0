"""Thesis 3.2.1 initialisation: n_w inputs per neuron, one per partition, and the stated sigma."""

import math

import pytest
import torch

from sparselayer.csr import validate_csr
from sparselayer.init import init_std, sparse_topology, weights_per_row
from sparselayer import SparseLinear

from conftest import DEVICES, DTYPES

SHAPES = [(784, 256, 0.9), (96, 7, 0.5), (28, 300, 0.95), (17, 33, 0.0), (256, 10, 0.99), (10, 4, 0.999)]


@pytest.mark.parametrize("n_in, n_out, sparsity", SHAPES)
@pytest.mark.parametrize("device", DEVICES)
def test_every_neuron_gets_one_input_per_partition(device, n_in, n_out, sparsity):
    crow, col = sparse_topology(n_in, n_out, sparsity, device=device, generator=torch.Generator().manual_seed(0))
    n_w = max(1, round(n_in * (1 - sparsity)))
    assert weights_per_row(n_in, sparsity) == n_w
    validate_csr(crow, col, (n_out, n_in))
    assert torch.equal(crow.diff(), torch.full((n_out,), n_w, device=device))
    partition = torch.arange(n_w, device=device).repeat(n_out)  # the partition each nonzero must fall in
    lo, hi = partition * n_in // n_w, (partition + 1) * n_in // n_w
    assert bool(((col >= lo) & (col < hi)).all())


def test_partitions_are_sampled_uniformly():
    # 784 inputs, n_w = 78: partitions of 10 or 11 inputs; every offset inside a partition gets drawn.
    crow, col = sparse_topology(784, 2000, 0.9, generator=torch.Generator().manual_seed(1))
    starts = (torch.arange(78) * 784 // 78).repeat(2000)
    offsets = col - starts
    counts = torch.bincount(offsets)
    assert counts.numel() == 11 and bool((counts[:10] > 0.8 * counts[:10].float().mean()).all())


def test_sigma_is_the_sparsity_aware_xavier():
    n_in, n_out, s = 1000, 1000, 0.9
    layer = SparseLinear(n_in, n_out, s, generator=torch.Generator().manual_seed(0))
    expected = 2 / math.sqrt((n_in + n_out) * (1 - s))
    assert init_std(n_in, n_out, s) == pytest.approx(expected)
    # 100k draws: the sample std is within ~0.3% of sigma; 2% leaves no room for a wrong formula.
    assert layer.values.std().item() == pytest.approx(expected, rel=0.02)
    assert layer.values.mean().item() == pytest.approx(0.0, abs=0.01 * expected)
    plain = SparseLinear(n_in, n_out, s, init="xavier", generator=torch.Generator().manual_seed(0))
    assert plain.values.std().item() == pytest.approx(2 / math.sqrt(n_in + n_out), rel=0.02)
    assert bool((layer.bias == 0).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_generator_makes_it_reproducible(device, dtype):
    a = SparseLinear(50, 20, 0.8, device=device, dtype=dtype, generator=torch.Generator().manual_seed(5))
    b = SparseLinear(50, 20, 0.8, device=device, dtype=dtype, generator=torch.Generator().manual_seed(5))
    c = SparseLinear(50, 20, 0.8, device=device, dtype=dtype, generator=torch.Generator().manual_seed(6))
    assert a.values.dtype == dtype and a.values.device.type == device
    assert torch.equal(a.col_indices, b.col_indices) and torch.equal(a.values, b.values)
    assert not torch.equal(a.col_indices, c.col_indices)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), "0.9", None, True])
def test_bad_sparsity_is_rejected(sparsity):
    with pytest.raises((ValueError, TypeError), match="sparsity must be"):
        SparseLinear(10, 10, sparsity)


def test_bad_init_and_features_are_rejected():
    with pytest.raises(ValueError, match="init must be one of"):
        SparseLinear(10, 10, 0.5, init="kaiming")
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        SparseLinear(0, 10, 0.5)
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        SparseLinear(10, 2.5, 0.5)
    with pytest.raises(TypeError, match="dtype must be"):
        SparseLinear(10, 10, 0.5, dtype=torch.float16)
