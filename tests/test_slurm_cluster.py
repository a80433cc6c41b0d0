"""The private SLURM harness (tests/slurm_cluster.py) on a real munged + slurmctld + slurmd, and
the Snakemake SLURM executor on a toy workflow through it. Root only; CI (as root) fails rather
than skips when the SLURM binaries are missing (.ci/install-slurm installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import slurm_cluster
from slurm_cluster import (
    SlurmUnavailable,
    _pid_alive,
    find_binaries,
    private_slurm,
    require_private_slurm,
)

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]


def _snakemake_exe() -> Path:
    """The snakemake next to the running interpreter (the project's venv), else the repo's venv."""
    for candidate in (Path(sys.executable).parent / "snakemake", REPO / ".venv" / "bin" / "snakemake"):
        if candidate.exists():
            return candidate
    found = shutil.which("snakemake")
    assert found, "snakemake is not installed in the project's environment"
    return Path(found)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One private cluster shared by the tests of this module."""
    require_private_slurm()
    with private_slurm(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def test_missing_binaries_fail_in_ci_and_skip_elsewhere(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, path=None: None)
    with pytest.raises(SlurmUnavailable, match=r"\.ci/install-slurm"):
        find_binaries()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/install-slurm"):
        require_private_slurm()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"\.ci/install-slurm"):
        require_private_slurm()


def test_not_root_skips(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SlurmUnavailable, match="needs root"):
        slurm_cluster.check_available()
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_private_slurm()


def test_sbatch_wait_runs_a_job_on_the_private_node(cluster, tmp_path):
    out = tmp_path / "job-%j.out"
    res = cluster.run(
        "sbatch", "--parsable", "--wait", "-o", str(out), "-D", str(tmp_path),
        "--wrap", "hostname; echo $SLURM_JOB_ID",
        check=False, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{cluster.log_tails()}"
    job_id = int(res.stdout.strip().split(";")[0])
    text = (tmp_path / f"job-{job_id}.out").read_text().split()
    assert text == [cluster.node, str(job_id)]
    assert job_id in cluster.submitted_job_ids()
    # The clients in cluster.env see this cluster only.
    info = cluster.run("scontrol", "show", "config").stdout
    assert f"SlurmctldPort           = {cluster.slurmctld_port}" in info
    assert f"ClusterName             = {slurm_cluster.CLUSTER_NAME}" in info


def test_exit_stops_every_process_it_started(cluster, tmp_path):
    """A second cluster beside the module's one: its own ports and sockets; on exit its daemons,
    slurmstepd and a still-running job are all gone, and the first cluster is untouched."""
    with private_slurm(tmp_path / "second") as second:
        assert {second.slurmctld_port, second.slurmd_port}.isdisjoint(
            {cluster.slurmctld_port, cluster.slurmd_port}
        )
        assert second.munge_socket != cluster.munge_socket
        job = second.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300").stdout.strip()
        deadline = time.monotonic() + 20
        while second.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, second.log_tails()
            time.sleep(0.2)
        daemons = second.pids
        assert set(daemons) == {"munged", "slurmctld", "slurmd"}
        started = second.descendants()
        assert set(daemons.values()) <= set(started)
        assert len(started) > len(daemons)  # slurmstepd and the job's shell and sleep, at least
        # the module's cluster does not see the second's running job
        assert cluster.run("squeue", "-h", "-t", "RUNNING").stdout.strip() == ""
    alive = [pid for pid in started if _pid_alive(pid)]
    assert alive == [], f"still alive after exit: {alive}"
    assert second.descendants() == []
    assert cluster.run("scontrol", "ping").stdout.count("is UP") == 1
    assert cluster.node_state() == "idle"


SNAKEFILE = textwrap.dedent(
    """\
    rule all:
        input: "b.txt"

    rule a:
        output: "a_{i}.txt"
        resources: mem_mb=100, runtime=5
        shell: "echo a {wildcards.i} host=$(hostname) job=${{SLURM_JOB_ID:-none}} > {output}"

    rule b:
        input: expand("a_{i}.txt", i=[1, 2])
        output: "b.txt"
        resources: mem_mb=100, runtime=5
        shell: "cat {input} > {output}; echo b host=$(hostname) job=${{SLURM_JOB_ID:-none}} >> {output}"
    """
)


def test_snakemake_slurm_executor_runs_each_rule_job_as_a_slurm_job(cluster, tmp_path):
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "Snakefile").write_text(SNAKEFILE)
    snakemake = _snakemake_exe()
    env = dict(cluster.env)
    # The wrappers (cluster.bin_dir) stay first: the jobstep executor inside each job strips
    # SLURM_CONF before calling srun. Then the venv, for the job's own snakemake and python.
    env["PATH"] = os.pathsep.join([str(cluster.bin_dir), str(snakemake.parent), env["PATH"]])
    before = set(cluster.submitted_job_ids())
    cmd = [
        str(snakemake),
        "--executor", "slurm",
        "--jobs", "4",
        "--latency-wait", "30",
        "--slurm-status-command", "squeue",
        "--slurm-no-account",
        "--default-resources", f"slurm_partition={cluster.partition}",
        # Poll every second instead of after 40 s (the plugin adds 10 s per poll that finds
        # nothing finished, and resets on a finish); MinJobAge=300 >= 3 * 1 keeps squeue in use.
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "1",
        "--slurm-keep-successful-logs",
        "--directory", str(wf),
        "--snakefile", str(wf / "Snakefile"),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=240)
    report = f"{res.stdout[-4000:]}\n{res.stderr[-8000:]}\n{cluster.log_tails()}"
    assert res.returncode == 0, report

    new_jobs = [j for j in cluster.submitted_job_ids() if j not in before]
    assert len(new_jobs) == 3, report  # a (i=1), a (i=2), b; 'all' is a local rule
    ran_in = {}
    for name in ("a_1.txt", "a_2.txt", "b.txt"):
        last = (wf / name).read_text().splitlines()[-1]
        assert f"host={cluster.node}" in last
        ran_in[name] = int(last.rsplit("job=", 1)[1])
    assert sorted(ran_in.values()) == sorted(new_jobs)
    assert (wf / "b.txt").read_text().count("host=") == 3
    # The executor's per-job logs, .snakemake/slurm_logs/rule_<rule>[/<wildcards>]/<jobid>.log
    # (deleted after success unless --slurm-keep-successful-logs).
    logs = wf / ".snakemake" / "slurm_logs"
    assert (logs / "rule_a" / "1" / f"{ran_in['a_1.txt']}.log").exists()
    assert (logs / "rule_a" / "2" / f"{ran_in['a_2.txt']}.log").exists()
    assert (logs / "rule_b" / f"{ran_in['b.txt']}.log").exists()
