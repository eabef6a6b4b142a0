"""Two threads of one process launching the CUDA ops at once, on shapes that need different shared memory.

A sweep runs `trials_per_gpu` trials as threads of one worker: the kernels' launch set-up must not race (it
once did: each launch set the kernel's dynamic shared-memory limit to its own size, and a neighbour's smaller
setting made the launch fail with "too many resources requested for launch").
"""

import threading

import pytest
import torch

import sparselayer

pytestmark = pytest.mark.gpu

# (in, out, sparsity, batch): a dense-ish small layer and a large very sparse one pick different tile sizes.
SHAPES = [(512, 512, 0.9, 512), (4096, 4096, 0.99, 1024)]


def _train_steps(shape, steps, errors, seed):
    try:
        n_in, n_out, sparsity, batch = shape
        g = torch.Generator().manual_seed(seed)
        layer = sparselayer.SparseLinear(n_in, n_out, sparsity, generator=g).cuda()
        reference = torch.nn.Linear(n_in, n_out).cuda()
        with torch.no_grad():
            reference.weight.copy_(layer.to_dense())
            reference.bias.copy_(layer.bias)
        for _ in range(steps):
            x = torch.randn(batch, n_in, device="cuda")
            y = layer(x)
            y.square().sum().backward()
            torch.testing.assert_close(y, reference(x), rtol=1e-4, atol=1e-4)
        torch.cuda.synchronize()
    except BaseException as exc:  # collected and re-raised by the test's main thread
        errors.append(f"{shape}: {exc!r}")


def test_two_threads_with_different_shapes_run_concurrently():
    errors: list[str] = []
    threads = [threading.Thread(target=_train_steps, args=(shape, 30, errors, i)) for i, shape in enumerate(SHAPES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, "\n".join(errors)
