"""The study's units of work and where their results live; cache keys made of what made them.

A *unit* is what one workflow job computes for one section and architecture: a seed, or a pair
of training runs for pairwise sections. This module is light (no torch): the workflow calls it on every
dry run to name files and to compute the keys that decide reruns.

Files, under the outputs folder:

* ``cache/<section>/<arch>/<unit>-<key>.json`` (or under ``$LANDSCAPE_CACHE``) — a unit's results, keyed by everything that made
  them (the section's settings, the training runs' keys, upstream units' keys, the probe code's
  digest). The workflow and an interactive notebook share it.
* ``<study>/runs/<arch>/<run>.json`` — a training run the study uses (``s3``, ``i3d1003``) (its manifest and path).
* ``<study>/units/<section>/<arch>/part<i>of<n>.json`` — the results of one block of units (what
  one workflow job computes) as one study uses them.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from .paths import outputs_root
from .provenance import PACKAGE_DIR, SCHEMA_VERSION, short_hash, source_digest
from .registry import TRAINING_SETTINGS, Section, check_section

class RunId(NamedTuple):
    """One training run of an architecture: its initialisation seed and its data-order seed.

    The study's run for seed ``s`` is ``RunId(s, s)``; connectivity's controls add runs that share
    one of the two with it (same initialisation, another data order, or the reverse).
    """

    init: int
    data: int


class Cell(NamedTuple):
    """One unit of the optimisation-dynamics section: a part, a setting and a seed.

    Parts: ``"opt"`` (an optimiser recipe's run: its trajectory and the protocol measurements;
    setting = the recipe), ``"sizes"`` (λmax against the Hessian's sample size; no setting),
    ``"sweep"`` (a batch-size / learning-rate cell, setting ``"b<batch>-lr<lr>-<scaling>"``) and
    ``"eos"`` (full-batch gradient descent, setting ``"m<multiple>"``: 2/η = multiple × the initial
    sharpness). Named ``opt-adam-s0``, ``sizes-s0``, ``sweep-b4096-lr0.01-linear-s1``, ``eos-m1.06-s0``.
    """

    part: str
    setting: str
    seed: int


CELL_PARTS = ("opt", "sizes", "sweep", "eos")

# A seed (per-seed sections), a pair of runs (pairwise sections) or a dynamics cell.
Unit = int | tuple[RunId, RunId] | Cell

_RUN_NAME = re.compile(r"s(\d+)|i(\d+)d(\d+)")


def run_name(run: RunId | int) -> str:
    """``"s3"`` for the study's run of seed 3 (init 3, data 3), ``"i3d1003"`` for any other."""
    run = as_run(run)
    return f"s{run.init}" if run.init == run.data else f"i{run.init}d{run.data}"


def parse_run(name: str) -> RunId:
    """Inverse of :func:`run_name`.

    Raises:
        ValueError: not of the form ``s<int>`` or ``i<int>d<int>``.
    """
    m = _RUN_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"a run is 's<seed>' or 'i<init seed>d<data seed>', got {name!r}")
    return RunId(int(m[1]), int(m[1])) if m[1] is not None else RunId(int(m[2]), int(m[3]))


def as_run(run: RunId | int | tuple[int, int]) -> RunId:
    """A :class:`RunId` from a study seed ``s`` (``RunId(s, s)``) or an ``(init, data)`` pair."""
    if isinstance(run, int) and not isinstance(run, bool):
        return RunId(run, run)
    init, data = run
    return RunId(int(init), int(data))


def pair_kind(pair: tuple[RunId, RunId]) -> str:
    """``"same-init"`` (same initialisation, another data order), ``"same-data"`` (the reverse)
    or ``"independent"`` (both differ).

    Raises:
        ValueError: the two runs are the same run.
    """
    a, b = map(as_run, pair)
    if a == b:
        raise ValueError(f"a pair needs two different runs, got {run_name(a)} twice")
    return "same-init" if a.init == b.init else "same-data" if a.data == b.data else "independent"


def section_units(section: str | Section, cfg, arch: str | None = None) -> list[Unit]:
    """The units of ``section`` for the study settings ``cfg``: its seeds, its pairs of runs
    (:attr:`~landscape_utils.study.settings.StudyConfig.connectivity_pairs`) or, for a per-cell
    section, the cells of ``arch`` (:meth:`~landscape_utils.study.settings.StudyConfig.dynamics_cells`).

    Raises:
        ValueError: a per-cell section without ``arch``.
    """
    sec = section if isinstance(section, Section) else check_section(section)
    if sec.per == "cell":
        if arch is None:
            raise ValueError(f"section {sec.key!r} has units per architecture: pass arch")
        return list(cfg.dynamics_cells(arch))
    return list(cfg.connectivity_pairs) if sec.per == "pair" else list(cfg.seeds)


def unit_name(unit: Unit) -> str:
    """``"s3"`` for seed 3; ``"s0-s1"`` for the pair of seeds 0 and 1; ``"s0-i0d1000"`` for seed
    0's run and the run with initialisation 0 and data order 1000; ``"opt-adam-s0"`` for a cell."""
    if isinstance(unit, Cell):
        return "-".join(p for p in (unit.part, unit.setting, f"s{unit.seed}") if p)
    return "-".join(run_name(u) for u in unit) if isinstance(unit, tuple) else f"s{unit}"


def parse_unit(name: str) -> Unit:
    """Inverse of :func:`unit_name`.

    Raises:
        ValueError: not a seed ``s<int>``, a pair of runs ``<run>-<run>`` or a cell.
    """
    parts = name.split("-")
    if parts[0] in CELL_PARTS and len(parts) >= 2 and re.fullmatch(r"s\d+", parts[-1]):
        return Cell(parts[0], "-".join(parts[1:-1]), int(parts[-1][1:]))
    try:
        if len(parts) == 1 and parts[0].startswith("s"):
            run = parse_run(parts[0])
            return run.init
        if len(parts) == 2:
            return (parse_run(parts[0]), parse_run(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"a unit is a seed 's<seed>' or a pair of runs such as 's0-s1' or 's0-i0d1000', got {name!r}")


def study_runs(cfg) -> list[RunId]:
    """Every training run the study uses, per architecture: each seed's, then the connectivity
    controls' (sorted, no repeats)."""
    runs = {RunId(s, s) for s in cfg.seeds} | {as_run(r) for pair in cfg.connectivity_pairs for r in pair}
    return sorted(runs)


def unit_runs(unit: Unit) -> tuple[RunId, ...]:
    """The study's training runs a unit reads (the workflow trains them first). A cell reads the
    study's run of its seed when it is the study's optimiser or the sample-size study; its other
    runs it trains itself (:func:`unit_train_configs`)."""
    if isinstance(unit, Cell):
        study_run = unit.part == "sizes" or (unit.part == "opt" and unit.setting == "study")
        return (RunId(unit.seed, unit.seed),) if study_run else ()
    return tuple(map(as_run, unit)) if isinstance(unit, tuple) else (RunId(unit, unit),)


def unit_train_configs(arch: str, unit: Unit, cfg) -> list:
    """Every training run (``TrainConfig``) a unit's results depend on: the study's runs it reads
    and the runs a dynamics cell trains itself (full-batch gradient descent trains inside its job
    and has none)."""
    configs = [cfg.run_config(arch, r) for r in unit_runs(unit)]
    if isinstance(unit, Cell) and unit.part == "opt" and unit.setting != "study":
        configs.append(cfg.recipe_config(arch, unit.setting, unit.seed))
    elif isinstance(unit, Cell) and unit.part == "sweep":
        configs.append(cfg.sweep_config(arch, *parse_sweep_setting(unit.setting), unit.seed))
    return configs


def parse_sweep_setting(setting: str) -> tuple[int, float, str]:
    """``"b4096-lr0.01-linear"`` as (batch size, base learning rate, scaling).

    Raises:
        ValueError: not of that form.
    """
    m = re.fullmatch(r"b(\d+)-lr([0-9.e+-]+)-(none|linear)", setting)
    if not m:
        raise ValueError(f"a sweep setting is 'b<batch>-lr<lr>-<none|linear>', got {setting!r}")
    return int(m[1]), float(m[2]), m[3]


def unit_seeds(unit: Unit) -> tuple[int, ...]:
    """The study seeds of a unit's runs (each run's initialisation seed; a cell's seed)."""
    if isinstance(unit, Cell):
        return (unit.seed,)
    return tuple(r.init for r in unit_runs(unit))


class SectionSettings:
    """The study settings as one section's job may read them: its declared fields and training's.

    Reading any other field raises, so a job cannot depend on a setting that its cache key and
    the workflow's rerun rule do not cover.
    """

    def __init__(self, cfg, section: Section) -> None:
        self._cfg = cfg
        self._section = section
        self._allowed = frozenset(section.settings) | frozenset(TRAINING_SETTINGS)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._allowed:
            raise AttributeError(f"section {self._section.key!r} reads setting {name!r}, which its registry "
                                 f"entry does not declare (declared: {', '.join(sorted(self._section.settings))})")
        return getattr(self._cfg, name)

    def train_config(self, arch: str, seed: int):
        return self._cfg.train_config(arch, seed)

    def run_config(self, arch: str, run):
        return self._cfg.run_config(arch, run)

    def recipe_config(self, arch: str, recipe: str, seed: int):
        return self._cfg.recipe_config(arch, recipe, seed)

    def sweep_config(self, arch: str, batch_size: int, lr: float, scaling: str, seed: int):
        return self._cfg.sweep_config(arch, batch_size, lr, scaling, seed)

    def declared(self) -> dict[str, Any]:
        """The declared settings' values (plain JSON types)."""
        plain = self._cfg.to_dict()
        return {k: plain[k] for k in sorted(self._section.settings)}


def probes_source_digest(section: Section) -> str:
    """Digest of the code behind a section's results: the probes, the study's data and jobs
    modules, and the module of the section's own job function."""
    job_module = importlib.util.find_spec(section.job.partition(":")[0]).origin  # located, not imported
    return source_digest([*(PACKAGE_DIR / "probes").glob("*.py"), PACKAGE_DIR / "study" / "jobs.py",
                          PACKAGE_DIR / "study" / "data.py", job_module])


def unit_key(section: str | Section, arch: str, unit: Unit, cfg) -> str:
    """The cache key of one unit's results: a hash of everything that determines them."""
    sec = section if isinstance(section, Section) else check_section(section)
    payload = {
        "schema": SCHEMA_VERSION, "section": sec.key, "arch": arch, "unit": unit_name(unit),
        "settings": SectionSettings(cfg, sec).declared(), "source": probes_source_digest(sec),
        "runs": [c.key() for c in unit_train_configs(arch, unit, cfg)],
        "upstream": {u: unit_key(u, arch, unit, cfg) for u in sec.reads},
    }
    return short_hash(payload)


def cache_root() -> Path:
    """``$LANDSCAPE_CACHE`` when set, else ``<outputs>/cache``."""
    return Path(os.environ.get("LANDSCAPE_CACHE") or outputs_root() / "cache").resolve()


def cache_path(section: str, arch: str, unit: Unit, key: str) -> Path:
    return cache_root() / section / arch / f"{unit_name(unit)}-{key}.json"


def unit_blocks(section: str | Section, cfg, block_size: int = 0, arch: str | None = None) -> list[list[Unit]]:
    """The section's units cut into consecutive blocks of ``block_size`` (0: one block), one
    workflow job each: one unit per job fans out on a cluster; a few large blocks spare a 2-core
    machine most of the per-job start-up (Python, torch, MNIST: about 2 s a job).

    Raises:
        ValueError: a negative block size.
    """
    if not isinstance(block_size, int) or block_size < 0:
        raise ValueError(f"block size must be a non-negative integer, got {block_size!r}")
    sec = section if isinstance(section, Section) else check_section(section)
    all_units = section_units(sec, cfg, arch)
    size = block_size or sec.block or max(1, len(all_units))
    return [all_units[i:i + size] for i in range(0, len(all_units), size)]


def block_name(index: int, count: int) -> str:
    """``"part2of5"``: the file stem of block ``index`` (from 0) of ``count``."""
    return f"part{index + 1}of{count}"


def block_path(study_dir: str | Path, section: str, arch: str, index: int, count: int) -> Path:
    return Path(study_dir) / "units" / section / arch / f"{block_name(index, count)}.json"


def block_units(section: str | Section, cfg, block_size: int, name: str, arch: str | None = None) -> list[Unit]:
    """The units of the block called ``name`` (``"part2of5"``) under this block size.

    Raises:
        ValueError: a name that is not one of the section's blocks.
    """
    blocks = unit_blocks(section, cfg, block_size, arch)
    names = [block_name(i, len(blocks)) for i in range(len(blocks))]
    if name not in names:
        raise ValueError(f"no block {name!r}; blocks: {', '.join(names)}")
    return blocks[names.index(name)]


def run_pointer_path(study_dir: str | Path, arch: str, run: RunId | int) -> Path:
    return Path(study_dir) / "runs" / arch / f"{run_name(run)}.json"


def summary_path(study_dir: str | Path, section: str, arch: str) -> Path:
    return Path(study_dir) / "summaries" / section / f"{arch}.json"


def notebook_source_digest() -> str:
    """Digest of the code a section or comparison notebook runs besides its probes' results:
    summaries, statistics and the report layer (figures, tables, analysis text)."""
    return source_digest([*(PACKAGE_DIR / "report").glob("*.py"), PACKAGE_DIR / "study" / "summaries.py",
                          PACKAGE_DIR / "study" / "stats.py", PACKAGE_DIR / "study" / "settings.py"])


# The sections whose estimators the estimator-noise study repeats (their settings and runs key it).
NOISE_SECTIONS = ("curvature", "flatness", "slices", "connectivity")


def noise_runs(cfg) -> list[RunId]:
    """The runs the estimator-noise study reads: the first seed's, and the first independent pair's."""
    runs = [RunId(cfg.seeds[0], cfg.seeds[0])]
    pair = next((p for p in cfg.connectivity_pairs if pair_kind(p) == "independent"), None)
    return runs + ([as_run(r) for r in pair if as_run(r) not in runs] if pair else [])


def noise_key(arch: str, cfg) -> str:
    """The cache key of an architecture's estimator-noise study: its repeats, the repeated sections'
    settings, the runs it reads and the code (probes, jobs, the variance module)."""
    payload = {
        "schema": SCHEMA_VERSION, "arch": arch, "repeats": cfg.variance_repeats,
        "settings": {s: SectionSettings(cfg, check_section(s)).declared() for s in NOISE_SECTIONS},
        "runs": [cfg.run_config(arch, r).key() for r in noise_runs(cfg)],
        "source": source_digest([*(PACKAGE_DIR / "probes").glob("*.py"), PACKAGE_DIR / "study" / "jobs.py",
                                 PACKAGE_DIR / "study" / "data.py", PACKAGE_DIR / "study" / "variance.py"]),
    }
    return short_hash(payload)


def noise_path(study_dir: str | Path, arch: str) -> Path:
    return Path(study_dir) / "variance" / f"{arch}.json"
