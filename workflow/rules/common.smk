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
# Units (seeds or seed pairs) per probe job: 1 fans out fully (a cluster); 0 puts every unit of a
# section and architecture in one job, which spares a 2-core machine most of the per-job start-up.
BLOCK = int(config.get("block", 0))

wildcard_constraints:
    arch="|".join(ARCHS),
    section="|".join(SECTIONS),
    run=r"s\d+|i\d+d\d+",
    block=r"part\d+of\d+",


def block_files(section, arch):
    n = len(units.unit_blocks(section, CFG, BLOCK, arch))
    return [str(units.block_path(SD, section, arch, i, n)) for i in range(n)]


def block_units(section, block, arch):
    return units.block_units(section, CFG, BLOCK, block, arch)


def run_files(arch, unit_list):
    runs = sorted({r for u in unit_list for r in units.unit_runs(u)})
    return [str(units.run_pointer_path(SD, arch, r)) for r in runs]


def notebook_settings(section=None):
    """What a notebook's text and figures depend on besides its inputs: the settings it renders."""
    shown = set(registry.TRAINING_SETTINGS) | (set(registry.SECTIONS[section].settings) if section else set(CFG.to_dict()))
    plain = CFG.to_dict()
    return short_hash({k: plain[k] for k in sorted(shown)})


def _block_index(block):
    """(index from 0, count) of a block name such as part2of5."""
    i, n = block[len("part"):].split("of")
    return int(i) - 1, int(n)
