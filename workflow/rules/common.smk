# Settings, registries and file names shared by the rules (plain Python; no torch import).
import json
import os
import sys
from pathlib import Path

REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO))  # this checkout's package, also inside a copy of the repository

from landscape_utils.study import registry, units
from landscape_utils.study.provenance import canonical_json, short_hash, source_digest
from landscape_utils.study.settings import open_study, parse_assignments

# --config profile=smoke overrides='{"lr": 0.02}' set='lr=0.02 seeds=[0,1]' (set is what `make SET=` passes)
_overrides = config.get("overrides") or {}
if isinstance(_overrides, str):
    _overrides = json.loads(_overrides)
_overrides = {**_overrides, **parse_assignments(str(config.get("set") or ""))}
STUDY = open_study(str(config.get("profile", "full")), _overrides)
CFG = STUDY.config
# The study's folder, relative to the repository when inside it (shorter job lines and logs).
SD = os.path.relpath(STUDY.dir, REPO) if STUDY.dir.is_relative_to(REPO) else str(STUDY.dir)
ARCHS = list(registry.ARCHITECTURES)
SECTIONS = list(registry.SECTIONS)
PY = sys.executable
# Every command names the study the same way; the overrides travel as one JSON argument.
STUDY_ARGS = f"--profile {STUDY.profile} --overrides '{json.dumps(STUDY.overrides, sort_keys=True)}'"
REPORT = f"{SD}/report.html"
GPU = 1 if CFG.device == "cuda" else 0

wildcard_constraints:
    arch="|".join(ARCHS),
    section="|".join(SECTIONS),
    seed=r"\d+",
    unit=r"s\d+(-s\d+)?",


def unit_files(section, arch):
    return [str(units.unit_path(SD, section, arch, u)) for u in units.section_units(section, CFG)]


def run_files(arch, unit):
    return [str(units.run_pointer_path(SD, arch, s)) for s in units.unit_seeds(unit)]


def unit_flag(unit):
    return f"--pair {unit[0]} {unit[1]}" if isinstance(unit, tuple) else f"--seed {unit}"


def notebook_settings(section=None):
    """What a notebook's text and figures depend on besides its inputs: the settings it renders."""
    shown = set(registry.TRAINING_SETTINGS) | (set(registry.SECTIONS[section].settings) if section else set(CFG.to_dict()))
    plain = CFG.to_dict()
    return short_hash({k: plain[k] for k in sorted(shown)})
