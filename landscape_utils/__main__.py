"""Command line of the study; every command prints one ``error:`` line on bad input, never a traceback.

    python -m landscape_utils train --arch cnn [--epochs 3 ...]        one run from training options
    python -m landscape_utils run --arch cnn --seed 1 [--profile full] [--set k=v ...] [--out F]
    python -m landscape_utils probe curvature --arch cnn --seed 1 [--profile full] [--out F]
    python -m landscape_utils probe connectivity --arch cnn --pair 0 1 [--profile full] [--out F]
    python -m landscape_utils probe curvature --arch cnn --units s0 s1 s2 [--out F]   several units, one file
    python -m landscape_utils notebook 02_curvature --arch cnn [--profile full] --out F.ipynb
    python -m landscape_utils report [--profile full] [--set ...] [--out F.html]
    python -m landscape_utils settings [--profile full] [--set ...]   write settings.json, print the folder
    python -m landscape_utils variants [--clean]                        list (or remove) variant folders

Exit status: 0 done, 2 bad input (nothing was run), 1 a failure while running.

``--set key=value`` (repeatable; values are JSON, e.g. ``--set seeds=[0,1] lr=0.02``) and
``--overrides '{"lr": 0.02}'`` override study settings; a study with overrides lives in its own
folder ``outputs/<profile>-<hash>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any


def _parse_set(items: Sequence[str], overrides_json: str | None) -> dict[str, Any]:
    from .study.settings import parse_assignments

    overrides: dict[str, Any] = {}
    if overrides_json:
        try:
            overrides = json.loads(overrides_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--overrides is not JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"--overrides must be a JSON object, got {overrides_json!r}")
    return {**overrides, **parse_assignments(list(items))}


def _study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="full", help="profile in profiles/ (default: full)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings (JSON values)")
    p.add_argument("--overrides", default=None, help="overrides as one JSON object")


def _parser() -> argparse.ArgumentParser:
    from .study.config import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m landscape_utils", description="Loss-landscape study tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run from training options (cached); print its folder")
    for field in dataclasses.fields(TrainConfig):
        default = field.default
        kind = {int: int, float: float, str: str}.get(type(default), None)
        if default is None or field.name in ("max_steps", "train_size"):
            kind = float if field.name == "target_loss" else int
        train.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default, help=f"default: {default}")
    train.add_argument("--data-dir", default=None, help="folder holding MNIST/raw/ (default: $LANDSCAPE_DATA or <repo>/data)")
    train.add_argument("--runs-dir", default=None, help="run cache folder (default: $LANDSCAPE_RUNS or outputs/runs)")
    train.add_argument("--no-download", action="store_true", help="never download MNIST")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="one of the study's training runs of one architecture")
    run.add_argument("--arch", required=True)
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="the run of one study seed")
    which.add_argument("--run", help="a run by name: s<seed>, or i<init seed>d<data seed> (connectivity's controls)")
    _study_args(run)
    run.add_argument("--out", default=None, help="write the run's manifest and folder here (JSON)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    probe = sub.add_parser("probe", help="one section's results for one seed (or pair): cached, then written")
    probe.add_argument("section")
    probe.add_argument("--arch", required=True)
    unit = probe.add_mutually_exclusive_group(required=True)
    unit.add_argument("--seed", type=int, help="one seed")
    unit.add_argument("--pair", type=int, nargs=2, metavar=("A", "B"), help="the pair of study seeds A and B")
    unit.add_argument("--units", nargs="+", metavar="UNIT", help="several units: s0 s1 ... or s0-s1 s0-i0d1000 ...")
    _study_args(probe)
    probe.add_argument("--out", default=None, help="also write the units' results here (one JSON file)")

    noise = sub.add_parser("variance", help="estimator noise: the probes repeated on one run with fresh randomness (cached)")
    noise.add_argument("--arch", required=True)
    _study_args(noise)
    noise.add_argument("--out", default=None, help="also write the result here (JSON)")

    nb = sub.add_parser("notebook", help="execute a study notebook with papermill")
    nb.add_argument("notebook", help="notebook stem, e.g. 02_curvature")
    nb.add_argument("--arch", default=None, help="architecture (section notebooks)")
    _study_args(nb)
    nb.add_argument("--out", required=True, help="executed notebook to write")

    rep = sub.add_parser("report", help="build the study's single-file HTML report from its executed notebooks")
    _study_args(rep)
    rep.add_argument("--out", default=None, help="default: <study folder>/report.html")

    st = sub.add_parser("settings", help="write the study's settings.json and print its folder")
    _study_args(st)

    var = sub.add_parser("variants", help="list the study folders made by overrides")
    var.add_argument("--clean", action="store_true", help="remove them")
    return parser


def _threads() -> None:
    # One math thread unless told otherwise (jobs run side by side, one per core); freed memory kept.
    from .study.runtime import configure_job_runtime

    configure_job_runtime()


def _cmd_train(args) -> int:
    from .study.config import TrainConfig
    from .study.training import train_or_load

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    run = train_or_load(config, data_dir=args.data_dir, runs_dir=args.runs_dir, progress=not args.quiet,
                        download=not args.no_download)
    m = run.final_metrics
    print(f"{'reused' if run.reused else 'trained'} {config.arch}: test acc {m['test_acc']:.4f}, "
          f"test loss {m['test_loss']:.4f}", file=sys.stderr)
    print(run.path)
    return 0


def _cmd_run(args, study) -> int:
    from .study.registry import check_arch
    from .study.results import write_json
    from .study.training import train_or_load

    from .study.units import as_run, parse_run, run_name, study_runs

    check_arch(args.arch)
    wanted = as_run(args.seed) if args.run is None else parse_run(args.run)
    valid = study_runs(study.config)
    if wanted not in valid:
        raise ValueError(f"run {run_name(wanted)} is not one of the study's runs ({', '.join(map(run_name, valid))})")
    _threads()
    run = train_or_load(study.config.run_config(args.arch, wanted), progress=not args.quiet)
    manifest = json.loads((run.path / "run.json").read_text())
    if args.out:
        write_json(args.out, {"path": str(run.path), **manifest})
    print(run.path)
    return 0


def _cmd_probe(args, study) -> int:
    from .study import jobs
    from .study.registry import check_arch, check_section
    from .study.results import write_json

    from .study.units import Cell, as_run, parse_unit

    sec = check_section(args.section)
    check_arch(args.arch)
    todo = ([parse_unit(u) for u in args.units] if args.units else [(as_run(args.pair[0]), as_run(args.pair[1])) if args.pair else args.seed])
    takes = {"pair": "pairs (--pair A B)", "seed": "seeds (--seed S)", "cell": "cells (--units opt-study-s0 ...)"}
    for unit in todo:
        kind = "cell" if isinstance(unit, Cell) else "pair" if isinstance(unit, tuple) else "seed"
        if kind != sec.per:
            raise ValueError(f"section {sec.key!r} takes {takes[sec.per]}")
    _threads()
    records = [jobs.unit_result(sec.key, args.arch, unit, study.config) for unit in todo]
    if args.out:
        write_json(args.out, {"section": sec.key, "arch": args.arch, "units": records})
    for record in records:
        print(f"{sec.key} {args.arch} {record['unit']}: key {record['key']}, {record['seconds']:.1f} s", file=sys.stderr)
    return 0


def _cmd_notebook(args, study) -> int:
    from .study.execute import execute_notebook
    from .study.registry import check_arch

    parameters: dict[str, Any] = {"profile": study.profile, "overrides": study.overrides, "study_dir": str(study.dir)}
    if args.arch is not None:
        parameters["arch"] = check_arch(args.arch)
    execute_notebook(args.notebook, args.out, parameters)
    return 0


def _cmd_variance(args, study) -> int:
    from .study.registry import check_arch
    from .study.results import write_json
    from .study.variance import cached_estimator_noise

    check_arch(args.arch)
    _threads()
    record = cached_estimator_noise(args.arch, study.config, progress=True)
    if args.out:
        write_json(args.out, record)
    print(f"variance {args.arch}: key {record['key']}, {record['seconds']:.1f} s", file=sys.stderr)
    return 0


def _cmd_report(args, study) -> int:
    from .report.html import build_report

    out = build_report(study.dir, args.out or study.dir / "report.html")
    print(out)
    return 0


def _cmd_variants(args) -> int:
    from .study.settings import list_variants

    variants = list_variants()
    if not variants:
        print("no variant study folders")
    for study in variants:
        settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in study.overrides.items())
        print(f"{study.dir}  (profile {study.profile}; {settings})")
        if args.clean:
            shutil.rmtree(study.dir)
            print(f"  removed {study.dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .report.html import ReportError
    from .study.errors import MNISTFileError, NotebookFailed, RunCacheError, TrainingDiverged

    expected = (ValueError, FileNotFoundError, MNISTFileError, NotebookFailed, ReportError, RunCacheError,
                TrainingDiverged, RuntimeError)
    try:
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "variants":
            return _cmd_variants(args)
        from .study.settings import open_study, write_settings

        study = open_study(args.profile, _parse_set(args.set, args.overrides))
        if args.command == "settings":
            print(write_settings(study).parent)
            return 0
        return {"run": _cmd_run, "probe": _cmd_probe, "notebook": _cmd_notebook,
                "report": _cmd_report, "variance": _cmd_variance}[args.command](args, study)
    except expected as exc:
        if os.environ.get("LANDSCAPE_DEBUG"):
            raise
        usage = isinstance(exc, (ValueError, FileNotFoundError))
        hint = "" if usage else " (LANDSCAPE_DEBUG=1 shows the traceback)"
        message = "; ".join(line.strip(" -") for line in str(exc).splitlines() if line.strip())
        print(f"error: {message}{hint}", file=sys.stderr)
        return 2 if usage else 1


if __name__ == "__main__":
    sys.exit(main())
