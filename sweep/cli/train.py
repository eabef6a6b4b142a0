"""`sweep train`: train one configuration (flags = the trainer's config keys) and print its metrics."""

from __future__ import annotations

import argparse
import json
import sys

from ..data import DataError
from ..train_config import DEFAULTS, TrainConfig, GROWTHS, INITS, LOSSES, OPTIMIZERS, PRECISIONS, REDUCTIONS, ConfigError
from ..data.registry import DATASET_NAMES
from ._base import Command, UsageError


def _sparsity(text: str) -> float | None:
    if text.lower() in ("dense", "none", "-"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1) or 'dense', not {text!r}") from None


def _flags(key: str) -> list[str]:
    dashed = "--" + key.replace("_", "-")
    return [dashed] if "_" not in key else [dashed, "--" + key]


def config_from_args(args: argparse.Namespace) -> dict:
    """The validated trainer config (a plain dict) that `sweep train` flags describe."""
    config = {key: getattr(args, key) for key in DEFAULTS}
    config["sparsity"] = args.sparsity[0] if len(args.sparsity) == 1 else args.sparsity
    try:
        return TrainConfig.from_any(config).to_dict()
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


class TrainCommand(Command):
    name = "train"
    help = "Train one configuration (the payload of a sweep trial) and print its metrics."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        d = DEFAULTS
        add = parser.add_argument
        add(*_flags("dataset"), choices=DATASET_NAMES, default=d["dataset"], help="default: %(default)s")
        add(*_flags("data_dir"), default=None, help="data directory (default: $SPARSESWEEP_DATA_DIR or ~/.cache/sparsesweep/data)")
        add(*_flags("hidden"), type=int, nargs="*", default=d["hidden"], metavar="N", help="hidden layer sizes (default: 256 256 256)")
        add(*_flags("sparsity"), type=_sparsity, nargs="+", default=[d["sparsity"]], metavar="S",
            help="one value for every layer or one per weight layer; 0 or 'dense' = dense (default: 0.9)")
        add(*_flags("loss"), choices=LOSSES, default=d["loss"])
        add(*_flags("loss_reduction"), choices=REDUCTIONS, default=d["loss_reduction"],
            help="sum: the thesis's reading of lr = 1/(2*batch) (default: %(default)s)")
        add(*_flags("optimizer"), choices=OPTIMIZERS, default=d["optimizer"])
        add(*_flags("lr"), type=float, default=None, help="default: 1/(2*batch) sparse, 1e-4 dense")
        add(*_flags("batch_size"), type=int, default=d["batch_size"])
        add(*_flags("epochs"), type=int, default=d["epochs"])
        add(*_flags("growth"), choices=GROWTHS, default=d["growth"], help="'none': fixed topology")
        add(*_flags("ttp"), type=float, default=d["ttp"], help="target threshold percentage as a fraction")
        add(*_flags("tau"), type=float, default=d["tau"])
        add(*_flags("tau_factor"), type=float, default=None)
        add(*_flags("k"), type=int, default=None, help="default: thesis equation 1, sqrt(N_t)")
        add(*_flags("evolve_every"), type=int, default=d["evolve_every"])
        add(*_flags("prune_dead"), action=argparse.BooleanOptionalAction, default=d["prune_dead"])
        add(*_flags("regrow"), type=float, default=d["regrow"])
        add(*_flags("init"), choices=INITS, default=d["init"])
        add(*_flags("seed"), type=int, default=d["seed"])
        add(*_flags("device"), default=d["device"], help="auto, cpu, cuda or cuda:N (default: auto)")
        add(*_flags("cuda_graph"), action=argparse.BooleanOptionalAction, default=d["cuda_graph"],
            help="on a GPU, replay each training iteration from a CUDA graph captured once per topology "
                 "(default: on; ignored on the CPU)")
        add(*_flags("precision"), choices=PRECISIONS, default=d["precision"],
            help="bf16: forward pass and loss under bfloat16 autocast, weights and gradients stay float32 "
                 "(default: %(default)s)")
        add("--json", action="store_true", help="print the metrics as JSON on stdout")
        add("--no-progress", action="store_true", help="no progress bar")

    def run(self, args: argparse.Namespace) -> int:
        from ..trainer import train

        try:
            metrics = train(config_from_args(args), progress=not args.no_progress)
        except (ConfigError, DataError) as exc:
            raise UsageError(str(exc)) from exc
        if args.json:
            json.dump(metrics, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            for key in ("status", "reason", "epochs_run", "best_test_accuracy", "final_test_accuracy",
                        "ms_per_iteration", "s_per_epoch", "inference_ms", "peak_memory_bytes", "n_params", "nnz",
                        "param_bytes", "overall_sparsity", "device"):
                print(f"{key:>20}: {metrics[key]}")
        return 0 if metrics["status"] == "ok" else 1


command = TrainCommand()
