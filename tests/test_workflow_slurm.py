"""The smoke study on a real SLURM cluster: a private single-node cluster started for the test
(tests/slurm_cluster.py), the workflow's SLURM profile, an outputs folder of its own. Every
non-local job must be a SLURM job, and the results must equal the local run's bit for bit (same
machine, same CPU kernels, deterministic seeds: nothing may differ but where the files live).
Root only; fails (not skips) under CI when SLURM is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slurm_cluster import private_slurm, require_private_slurm
from tests.conftest import snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _without_paths(value):
    """``value`` without the keys that name where files live (runs, packages) or when/where it ran."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in ("path", "provenance", "seconds")}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def _records(study_dir: Path) -> dict[tuple[str, str, str], dict]:
    """(section, arch, unit) -> unit record, from the study's block files (whatever the blocks)."""
    return {(r["section"], r["arch"], r["unit"]): r for path in study_dir.glob("units/*/*/part*.json")
            for r in json.loads(path.read_text())["units"]}


def test_smoke_study_through_slurm_equals_the_local_run(tmp_path_factory, smoke_study):
    require_private_slurm()
    local_dir, _, _ = smoke_study
    outputs = tmp_path_factory.mktemp("slurm-outputs")
    with private_slurm(tmp_path_factory.mktemp("slurm"), cpus=4) as cluster:
        args = ["--profile", "workflow/profiles/slurm", "--config", "profile=smoke", "block=1", "--jobs", "8",
                "--slurm-no-account", "--default-resources", f"slurm_partition={cluster.partition}",
                "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]
        proc = snakemake(args, outputs, base_env=cluster.env, timeout=1500)
        submitted = cluster.submitted_job_ids()
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:] + cluster.log_tails()
    stats = log.split("Job stats:")[1].split("\n\n")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    remote = sum(n for rule, n in counts.items() if rule not in ("total", "all", "settings", "report"))
    assert remote >= 40 and len(submitted) == remote, (counts, submitted)
    assert "localrule report" in log and "localrule probe" not in log and "localrule train" not in log

    slurm_dir = outputs / "smoke"
    local, remote_units = _records(local_dir), _records(slurm_dir)
    assert local and sorted(local) == sorted(remote_units)
    assert len(list(slurm_dir.glob("units/*/*/part*.json"))) == len(local)  # block=1: one unit per SLURM job
    for name, a in local.items():
        b = remote_units[name]
        assert a["key"] == b["key"], name  # same settings, runs and code
        assert _without_paths(a["result"]) == _without_paths(b["result"]), name
    for path in local_dir.glob("summaries/*/*.json"):
        other = slurm_dir / path.relative_to(local_dir)
        assert _without_paths(json.loads(path.read_text())["summary"]) == \
            _without_paths(json.loads(other.read_text())["summary"]), path
    assert (slurm_dir / "report.html").stat().st_size > 100_000
