"""CSR validation, COO -> CSR and the transposed (CSC) index."""

import pytest
import torch

from sparselayer.csr import CSRError, coo_to_csr, pointers, row_indices, transpose_index, validate_csr

from conftest import DEVICES
from csr_cases import CASE_IDS, CASES, dense_of, random_csr


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_random_cases_are_valid(case, device):
    crow, col, values = random_csr(*case, device=device)
    validate_csr(crow, col, case[:2], values)


def _valid():
    # [[1, 0, 2], [0, 0, 0], [0, 3, 0]]
    return torch.tensor([0, 2, 2, 3]), torch.tensor([0, 2, 1]), torch.tensor([1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c, k, v: (c, torch.tensor([2, 0, 1]), v), "row 0 has unsorted columns 2, 0"),
        (lambda c, k, v: (c, torch.tensor([0, 0, 1]), v), "row 0 has duplicate columns 0, 0"),
        (lambda c, k, v: (c, torch.tensor([0, 3, 1]), v), r"col_indices\[1\] = 3, must be in \[0, 3\)"),
        (lambda c, k, v: (c, torch.tensor([0, -1, 1]), v), "out of range"),
        (lambda c, k, v: (torch.tensor([0, 2, 3]), k, v), "needs n_out \\+ 1 = 4"),
        (lambda c, k, v: (torch.tensor([1, 2, 2, 3]), k, v), r"crow_indices\[0\] must be 0"),
        (lambda c, k, v: (torch.tensor([0, 2, 2, 2]), k, v), "must equal the number of nonzeros 3"),
        (lambda c, k, v: (torch.tensor([0, 3, 2, 3]), k, v), "non-decreasing"),
        (lambda c, k, v: (c.int(), k, v), "must be int64"),
        (lambda c, k, v: (c, k, v[:2]), "values has 2 entries but col_indices has 3"),
        (lambda c, k, v: (c, k, v.long()), "floating point"),
        (lambda c, k, v: (c, k.reshape(3, 1), v), "must be 1-D"),
    ],
)
def test_validate_csr_names_the_problem(mutate, message):
    crow, col, values = mutate(*_valid())
    with pytest.raises(CSRError, match=message):
        validate_csr(crow, col, (3, 3), values)


def test_validate_csr_accepts_valid_and_empty():
    validate_csr(*_valid()[:2], (3, 3), _valid()[2])
    validate_csr(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), (3, 3))
    with pytest.raises(CSRError, match="shape must be"):
        validate_csr(*_valid()[:2], (3,))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_coo_to_csr_sorts_shuffled_pairs(case, device):
    crow, col, values = random_csr(*case, device=device)
    rows = row_indices(crow, col.numel())
    shuffle = torch.randperm(col.numel(), generator=torch.Generator().manual_seed(3)).to(device)
    crow2, col2, order = coo_to_csr(rows[shuffle], col[shuffle], case[0], case[1])
    assert torch.equal(crow2, crow) and torch.equal(col2, col)
    assert torch.equal(values[shuffle][order], values)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("device", DEVICES)
def test_transpose_index_is_csr_of_the_transpose(case, device):
    n_out, n_in = case[:2]
    crow, col, values = random_csr(*case, device=device)
    ccol, row, perm = transpose_index(crow, col, n_in)
    validate_csr(ccol, row, (n_in, n_out), values[perm])  # sorted rows within every column
    dense_t = dense_of(ccol, row, values[perm], (n_in, n_out))
    assert torch.equal(dense_t, dense_of(crow, col, values, (n_out, n_in)).T)


def test_pointers_count_every_index():
    assert pointers(torch.tensor([0, 0, 2, 2, 2]), 4).tolist() == [0, 2, 2, 5, 5]
    assert pointers(torch.zeros(0, dtype=torch.int64), 2).tolist() == [0, 0, 0]
