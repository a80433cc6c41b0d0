"""Command line: ``python -m landscape_utils train --arch cnn [--epochs 3 ...]``.

Trains one run (or finds it in the cache) and prints the directory it lives in.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m landscape_utils",
                                     description="Loss-landscape study tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one run (cached) and print its directory")
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        kind = {int: int, float: float, str: str}.get(type(default), None)
        if default is None or field.name in ("max_steps", "train_size"):
            kind = int
        train.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default,
                           help=f"default: {default}")
    train.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ "
                       "(default: $LANDSCAPE_DATA or <repo>/data)")
    train.add_argument("--runs-dir", default=None, help="run cache folder "
                       "(default: $LANDSCAPE_RUNS or <repo>/outputs/runs)")
    train.add_argument("--no-download", action="store_true", help="never download MNIST")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        config = TrainConfig(**values)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .training import train_or_load

    run = train_or_load(config, data_dir=args.data_dir, runs_dir=args.runs_dir,
                        progress=not args.quiet, download=not args.no_download)
    m = run.final_metrics
    state = "reused" if run.reused else "trained"
    print(f"{state} {config.arch}: test acc {m['test_acc']:.4f}, test loss {m['test_loss']:.4f}",
          file=sys.stderr)
    print(run.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
