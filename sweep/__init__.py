"""sweep: Optuna hyperparameter sweeps of evolving sparse networks on a Dask(-CUDA) cluster.

The command line is `sweep` (see `sweep --help`); the trial payload is `sweep.trainer.train`.
"""
