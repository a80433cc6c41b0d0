"""Run the notebook study headlessly: papermill per (notebook, architecture), then the report.

All notebooks run from this one process (papermill and nbformat are imported once).
Each executed notebook ``outputs/<profile>/executed/<arch>/<notebook>.ipynb`` gets a
``.stamp`` next to it: a hash of the notebook's source, the profile file, the parameters,
the package's source and the stamps of the notebooks it reads. A notebook whose stamp is
current is skipped, so a change re-runs exactly what it affects. A failed execution keeps
its output notebook (for reading) but no stamp, and the report builder refuses it.

Usage: python -m landscape_utils.pipeline --profile smoke [--archs mlp cnn] [--set seeds=[0]]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import REPO_ROOT
from .models import MODELS
from .study import PROFILES_DIR, check_arch, load_study, output_dir

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROBE_NOTEBOOKS = ("01_training", "02_curvature", "03_flatness", "04_slices", "05_connectivity")
SUMMARY_NOTEBOOK = "06_comparison"
# Which notebooks' results each notebook reads (same architecture).
UPSTREAM = {
    "01_training": (),
    "02_curvature": ("01_training",),
    "03_flatness": ("01_training", "02_curvature"),
    "04_slices": ("01_training", "02_curvature"),
    "05_connectivity": ("01_training",),
}
KERNEL = "python3"  # resolved by jupyter_client to the running interpreter


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; its output notebook shows where."""


def executed_path(profile: str, arch: str | None, notebook: str) -> Path:
    base = output_dir(profile) / "executed"
    return (base / arch if arch else base) / f"{notebook}.ipynb"


def _package_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((REPO_ROOT / "landscape_utils").glob("*.py")):
        if path.name not in ("pipeline.py", "report.py"):  # they do not change results
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _stamp(notebook: str, profile: str, parameters: dict[str, Any], upstream: Sequence[Path]) -> str:
    h = hashlib.sha256()
    h.update((NOTEBOOKS_DIR / f"{notebook}.ipynb").read_bytes())
    h.update((PROFILES_DIR / f"{profile}.toml").read_bytes())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    h.update(_package_digest().encode())
    for path in upstream:
        stamp = path.with_suffix(".stamp")
        h.update(stamp.read_bytes() if stamp.exists() else b"missing")
    return h.hexdigest()


def check_parameters(notebook: str, parameters: dict[str, Any]) -> None:
    """Refuse parameters the notebook does not declare (papermill only warns).

    Raises:
        ValueError: naming the unknown parameters and the declared ones.
    """
    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{notebook}.ipynb"))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{notebook}: unknown parameter(s) {unknown}; declared: {sorted(declared)}")


def run_notebook(notebook: str, profile: str, arch: str | None, overrides: dict[str, Any],
                 upstream: Sequence[Path] = (), force: bool = False,
                 extra: dict[str, Any] | None = None, threads: int | None = None) -> tuple[Path, bool]:
    """Execute one notebook unless its stamp is current; return (output path, whether it ran).

    ``threads`` caps the kernel's math threads (for notebooks running side by side).

    Raises:
        NotebookFailed: the notebook raised; the message names the output notebook.
    """
    import papermill

    parameters: dict[str, Any] = {"profile": profile, "overrides": overrides}
    if arch is not None:
        parameters["arch"] = arch
    parameters.update(extra or {})
    out = executed_path(profile, arch, notebook)
    stamp_path = out.with_suffix(".stamp")
    stamp = _stamp(notebook, profile, parameters, upstream)
    if not force and out.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return out, False
    check_parameters(notebook, parameters)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)  # read by the kernel's torch at start-up
    label = f"{notebook} [{arch or 'all'}, {profile}]"
    print(f"running {label}", file=sys.stderr, flush=True)
    started = time.time()
    try:
        papermill.execute_notebook(
            str(NOTEBOOKS_DIR / f"{notebook}.ipynb"), str(out), parameters=parameters,
            kernel_name=KERNEL, cwd=str(NOTEBOOKS_DIR), progress_bar=False)
    except papermill.PapermillExecutionError as exc:
        raise NotebookFailed(f"{label} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                             f"  see {out}") from None
    stamp_path.write_text(stamp)
    print(f"  done in {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    return out, True


def waves(notebooks: Sequence[str]) -> list[list[str]]:
    """The notebooks grouped so that each group needs only earlier groups (for parallel runs)."""
    level: dict[str, int] = {}
    for nb in PROBE_NOTEBOOKS:  # listed in an order where upstream comes first
        level[nb] = 1 + max((level[u] for u in UPSTREAM[nb]), default=-1)
    groups: dict[int, list[str]] = {}
    for nb in notebooks:
        groups.setdefault(level[nb], []).append(nb)
    return [groups[k] for k in sorted(groups)]


def _run_wave(tasks: list[tuple], jobs: int) -> None:
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            run_notebook(*task)
        return
    # Forked workers inherit the imported papermill; no kernel exists yet in this process.
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(tasks)))
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=ctx) as pool:
        futures = [pool.submit(run_notebook, *task, None, threads) for task in tasks]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def run_study(profile: str, archs: Sequence[str], overrides: dict[str, Any] | None = None,
              notebooks: Sequence[str] | None = None, force: bool = False,
              report: bool = True, jobs: int = 1) -> Path | None:
    """Run every out-of-date notebook of ``profile`` for ``archs``, then build the report.

    Settings are checked first, so bad ones fail before any notebook runs. With ``jobs`` > 1,
    independent notebooks run side by side in that many processes.

    Returns:
        The report's path (``None`` when ``report`` is False).
    """
    overrides = dict(overrides or {})
    load_study(profile, overrides)  # validate before anything runs
    for arch in archs:
        check_arch(arch)
    # Matplotlib's agg backend in the environment would drop every inline figure.
    os.environ.pop("MPLBACKEND", None)
    chosen = list(notebooks or PROBE_NOTEBOOKS)
    unknown = sorted(set(chosen) - set(PROBE_NOTEBOOKS) - {SUMMARY_NOTEBOOK})
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; valid: {', '.join(PROBE_NOTEBOOKS + (SUMMARY_NOTEBOOK,))}")
    import papermill  # noqa: F401  (imported once, before any worker is forked)

    for wave in waves([nb for nb in PROBE_NOTEBOOKS if nb in chosen]):
        _run_wave([(nb, profile, arch, overrides, [executed_path(profile, arch, u) for u in UPSTREAM[nb]], force)
                   for nb in wave for arch in archs], jobs)
    if not report:
        return None
    upstream = [executed_path(profile, a, n) for n in PROBE_NOTEBOOKS for a in archs]
    run_notebook(SUMMARY_NOTEBOOK, profile, None, overrides, upstream, force, extra={"archs": list(archs)})
    from .report import build_report

    out = output_dir(profile) / "report.html"
    build_report(output_dir(profile), list(archs), out)
    print(f"report: {out}", file=sys.stderr)
    return out


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m landscape_utils.pipeline",
                                     description="Run the notebook study and build its report.")
    parser.add_argument("--profile", default="full", help="profile name (profiles/<name>.toml)")
    parser.add_argument("--archs", nargs="+", default=list(MODELS), help="architectures")
    parser.add_argument("--notebooks", nargs="+", default=None,
                        help="run only these probe notebooks (no report)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override study settings, e.g. --set seeds=[0,1] lr=0.02")
    parser.add_argument("--force", action="store_true", help="re-run even up-to-date notebooks")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="notebooks run side by side (default: number of cores)")
    args = parser.parse_args(argv)
    try:
        run_study(args.profile, args.archs, _parse_set(args.set), args.notebooks, args.force,
                  report=args.notebooks is None, jobs=args.jobs)
    except (ValueError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
