"""A real, private, single-node SLURM cluster for tests.

``private_slurm(workdir)`` starts its own ``munged``, ``slurmctld`` and ``slurmd`` (Debian's
slurm-wlm and munge packages), with every state folder, pid file, log file, socket and TCP
port private to this cluster, so it neither needs nor disturbs a SLURM or munge that may
already run on the machine. It yields a :class:`PrivateSlurm` whose ``env`` makes ``sbatch``,
``srun``, ``squeue``, ``scontrol``, ``sinfo`` and ``scancel`` talk to this cluster only, and on
exit stops exactly the processes it started (by pid, never by name).

Two details matter for the Snakemake SLURM executor:

* ``env["PATH"]`` starts with a folder of small wrapper scripts (``sbatch``, ``srun``, ...) that
  set ``SLURM_CONF`` before running the real binary. The snakemake-executor-plugin-slurm-jobstep
  plugin that runs inside each job strips every ``SLURM_*`` variable except the job's identity
  before calling ``srun``, which would otherwise send ``srun`` to /etc/slurm/slurm.conf.
* ``MinJobAge`` stays at 300 s so that ``--slurm-status-command squeue`` keeps seeing finished
  jobs; with a lower value the plugin silently switches to ``sacct``, which cannot work here
  (no accounting storage).

Needs root (the munge key belongs to the ``munge`` user and ``SlurmUser=root``); the binaries
come from ``.ci/install-slurm``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / ".ci" / "install-slurm"

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel", "sacct")
# Client commands the harness itself needs; sacct is wrapped if present but not required.
REQUIRED_CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")
PARTITION = "debug"
CLUSTER_NAME = "private"
# Environment variables a surrounding SLURM job (or a user's defaults) could leak into the
# private cluster's clients; they are dropped from the yielded env.
_LEAKY_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_", "SCANCEL_")
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes including the terminating NUL
_SUBMIT_RE = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+)")


class SlurmUnavailable(RuntimeError):
    """The SLURM or munge binaries are missing, or the caller is not root."""


def in_ci() -> bool:
    """True where the environment says it is CI (``CI=true``, ``CI=1``, ...)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def find_binaries() -> dict[str, str]:
    """Absolute paths of the daemons and client commands; raises SlurmUnavailable if any is missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    found: dict[str, str] = {}
    missing = []
    for name in DAEMONS + CLIENTS:
        path = shutil.which(name, path=search)
        if path:
            found[name] = path
        elif name in DAEMONS or name in REQUIRED_CLIENTS:
            missing.append(name)
    if missing:
        raise SlurmUnavailable(
            f"SLURM/munge binaries not found: {', '.join(missing)}. "
            f"Run {INSTALL_SCRIPT.relative_to(REPO)} (as root) to install slurm-wlm, slurm-client "
            "and munge."
        )
    return found


def check_available() -> dict[str, str]:
    """Raise SlurmUnavailable unless the binaries exist and we are root; return the binaries."""
    binaries = find_binaries()
    if os.geteuid() != 0:
        raise SlurmUnavailable(
            "the private SLURM cluster needs root (munge key owned by 'munge', SlurmUser=root)"
        )
    return binaries


def require_private_slurm() -> None:
    """Test-side policy: fail in CI when SLURM is missing, skip elsewhere; skip when not root."""
    import pytest

    try:
        find_binaries()
    except SlurmUnavailable as exc:
        if in_ci():
            pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(str(exc))
    if os.geteuid() != 0:
        pytest.skip("the private SLURM cluster needs root (munge key owner, SlurmUser=root)")


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports, found by binding to port 0 (all held open until all are known)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4096


def _pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    # the state follows the ")" closing the command name
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text[-lines:]) or "<empty>"


@dataclass
class PrivateSlurm:
    """A running private cluster. ``env`` is what client commands and Snakemake must run with."""

    workdir: Path
    conf: Path
    env: dict[str, str]
    partition: str
    node: str
    cpus: int
    real_memory_mb: int
    slurmctld_port: int
    slurmd_port: int
    munge_socket: Path
    bin_dir: Path
    logs: dict[str, Path]
    binaries: dict[str, str]
    tag: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- inspection -------------------------------------------------------------------------
    @property
    def pids(self) -> dict[str, int]:
        """The daemons' pids (munged, slurmctld, slurmd)."""
        return {name: proc.pid for name, proc in self.procs.items()}

    def run(self, *args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run a client command (e.g. ``run("squeue", "-h")``) against this cluster, capturing text."""
        return subprocess.run(
            list(args), env=self.env, check=check, timeout=timeout, capture_output=True, text=True, **kwargs
        )

    def submitted_job_ids(self) -> list[int]:
        """Ids of the batch jobs submitted to this cluster so far, in order (from slurmctld's log)."""
        try:
            text = self.logs["slurmctld"].read_text(errors="replace")
        except OSError:
            return []
        return [int(m) for m in _SUBMIT_RE.findall(text)]

    def node_state(self) -> str:
        res = self.run(self.binaries["sinfo"], "-h", "-N", "-n", self.node, "-o", "%T", check=False, timeout=15)
        return res.stdout.strip() if res.returncode == 0 else f"<sinfo failed: {res.stderr.strip()}>"

    def active_job_ids(self) -> list[int]:
        """Jobs still pending, running or completing."""
        res = self.run(self.binaries["squeue"], "-h", "-o", "%i", "-t", "PD,R,CG,CF,S", check=False, timeout=15)
        return [int(x) for x in res.stdout.split() if x.isdigit()] if res.returncode == 0 else []

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each daemon's log (its captured stdout/stderr where the log is missing)."""
        parts = []
        for name, path in self.logs.items():
            if not path.exists():
                path = path.parent / f"{name}.stdout"
            parts.append(f"--- {name}: {path} ---\n{_tail(path, lines)}")
        return "\n".join(parts)

    def descendants(self) -> list[int]:
        """Every live process that belongs to this cluster: the daemons, anything carrying the
        cluster's tag in its environment (slurmstepd inherits slurmd's), and all their descendants
        (the job processes under slurmstepd)."""
        tag = f"PRIVATE_SLURM_TAG={self.tag}".encode()
        roots = {p.pid for p in self.procs.values() if _pid_alive(p.pid)}
        parents: dict[int, int | None] = {}
        for pid in _all_pids():
            if pid == os.getpid():
                continue
            parents[pid] = _ppid(pid)
            if pid in roots:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if tag in fh.read().split(b"\0"):
                        roots.add(pid)
            except OSError:
                pass
        found = set(roots)
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if pid not in found and ppid in found:
                    found.add(pid)
                    changed = True
        return sorted(p for p in found if _pid_alive(p))


def _write_wrappers(bin_dir: Path, binaries: dict[str, str], conf: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in CLIENTS:
        if name not in binaries:
            continue
        script = bin_dir / name
        script.write_text(
            "#!/bin/sh\n"
            "# private_slurm: always talk to the private test cluster, even where a caller\n"
            "# (snakemake's slurm-jobstep executor) strips SLURM_CONF from the environment.\n"
            f"SLURM_CONF={shlex.quote(str(conf))}; export SLURM_CONF\n"
            f"exec {shlex.quote(binaries[name])} \"$@\"\n"
        )
        script.chmod(0o755)


def _slurm_conf(
    *,
    node: str,
    cpus: int,
    real_memory_mb: int,
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    state: Path,
    spool: Path,
    run: Path,
    log: Path,
    etc: Path,
) -> str:
    return f"""\
# Generated by tests/slurm_cluster.py: a private single-node test cluster.
ClusterName={CLUSTER_NAME}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={run}/slurmctld.pid
SlurmdPidFile={run}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={etc}/plugstack.conf
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
# Finished jobs stay visible to squeue for 300 s: snakemake's --slurm-status-command squeue
# needs MinJobAge >= 3 * --slurm-init-seconds-before-status-checks, else it falls back to sacct.
MinJobAge=300
KillWait=5
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmctldTimeout=60
SlurmdTimeout=60
NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} RealMemory={real_memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _terminate(pids: list[int], grace: float) -> None:
    """SIGTERM the pids, wait up to grace seconds, then SIGKILL what is left (and wait briefly)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        live = [p for p in pids if _pid_alive(p)]
        if not live:
            return
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_pid_alive(p) for p in live):
            time.sleep(0.05)


def _stop_popen(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _shutdown(cluster: PrivateSlurm) -> None:
    # 1. Cancel whatever is still queued or running, so slurmstepd ends the job processes itself.
    ctld = cluster.procs.get("slurmctld")
    if ctld is not None and ctld.poll() is None:
        with contextlib.suppress(Exception):
            if cluster.active_job_ids():
                cluster.run(cluster.binaries["scancel"], "--full", "--user", str(os.geteuid()), check=False, timeout=15)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and cluster.active_job_ids():
                    time.sleep(0.2)
    leftovers = cluster.descendants()  # includes slurmstepd and job processes, if any
    # 2. The daemons, slurmd first, munged last (the others authenticate through it).
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.get(name)
        if proc is not None:
            _stop_popen(proc, grace=10)
    # 3. Anything of ours that outlived them (slurmstepd, job processes).
    leftovers = sorted(set(leftovers) | set(cluster.descendants()))
    _terminate(leftovers, grace=5)


def _wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class _PortClash(RuntimeError):
    """A daemon could not bind its port (another process took it after we chose it)."""


def _fatal_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text(errors="replace").splitlines() if "fatal:" in ln]
    except OSError:
        return []


@contextlib.contextmanager
def private_slurm(
    workdir: Path,
    cpus: int | None = None,
    *,
    real_memory_mb: int | None = None,
    start_timeout: float = 30.0,
) -> Iterator[PrivateSlurm]:
    """Start a private munged + slurmctld + slurmd under ``workdir``; yield a :class:`PrivateSlurm`.

    ``cpus`` defaults to the CPUs this process may use; ``real_memory_mb`` to 80 % of the
    machine's memory. Raises :class:`SlurmUnavailable` when the binaries are missing or the
    caller is not root, and RuntimeError (with the daemons' log tails) when the cluster does
    not come up within ``start_timeout`` seconds. Everything started is stopped on exit, also
    on error or KeyboardInterrupt.
    """
    binaries = check_available()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cpus = int(cpus or len(os.sched_getaffinity(0)) or 1)
    total_mb = _mem_total_mb()
    if real_memory_mb is None:
        real_memory_mb = max(256, min(int(total_mb * 0.8), total_mb - 512))
    node = socket.gethostname().split(".")[0]

    etc, state, spool, run, log = (workdir / d for d in ("etc", "state", "spool", "run", "log"))
    for d in (etc, state, spool, run, log):
        d.mkdir(parents=True, exist_ok=True)
    for old in log.iterdir():  # a reused workdir must not report an earlier cluster's jobs
        if old.is_file():
            old.unlink()
    # UNIX sockets: munge's socket and slurmd's per-step sockets (<spool>/<node>_<job>.<step>)
    # must fit in sun_path, so a long workdir gets a short private folder under /tmp instead.
    short_dir: Path | None = None
    sock_dir = workdir / "sock"
    longest = max(len(str(sock_dir / "munge.socket.2.lock")), len(str(spool / f"{node}_4294967294.4294967294")))
    if longest > _UNIX_PATH_MAX - 8:
        short_dir = Path(tempfile.mkdtemp(prefix="pslurm-", dir="/tmp"))
        sock_dir = short_dir / "sock"
        spool = short_dir / "spool"
        spool.mkdir()
    sock_dir.mkdir(parents=True, exist_ok=True)
    munge_socket = sock_dir / "munge.socket.2"

    # munge: a fresh random 1,024-byte key, mode 0400, owned by the user munged runs as (root;
    # a munge-owned key works too with --force, but munged then warns that it is insecure).
    munge_dir = workdir / "munge"
    munge_dir.mkdir(exist_ok=True)
    key = munge_dir / "munge.key"
    if key.exists():
        key.unlink()
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(1024))
    os.chown(key, os.geteuid(), os.getegid())
    key.chmod(0o400)

    conf = etc / "slurm.conf"
    (etc / "plugstack.conf").write_text("# empty: no SPANK plugins in the private test cluster\n")
    bin_dir = workdir / "bin"
    _write_wrappers(bin_dir, binaries, conf)

    logs = {
        # munged --foreground logs to stderr, which goes to munged.stdout
        "munged": log / "munged.stdout",
        "slurmctld": log / "slurmctld.log",
        "slurmd": log / "slurmd.log",
    }
    tag = secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH") or "/usr/bin:/bin"])
    daemon_env = dict(env)
    daemon_env["PRIVATE_SLURM_TAG"] = tag  # inherited by slurmstepd: lets teardown find it

    cluster = PrivateSlurm(
        workdir=workdir,
        conf=conf,
        env=env,
        partition=PARTITION,
        node=node,
        cpus=cpus,
        real_memory_mb=real_memory_mb,
        slurmctld_port=0,
        slurmd_port=0,
        munge_socket=munge_socket,
        bin_dir=bin_dir,
        logs=logs,
        binaries=binaries,
        tag=tag,
    )

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        with open(log / f"{name}.stdout", "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=daemon_env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches pytest only, which cleans up
            )
        cluster.procs[name] = proc
        return proc

    def fail(reason: str) -> RuntimeError:
        return RuntimeError(
            f"private SLURM cluster in {workdir} did not come up: {reason}\n{cluster.log_tails()}"
        )

    def check_daemons() -> None:
        for name in ("slurmctld", "slurmd"):
            fatal = _fatal_lines(logs[name])
            if fatal:
                if "Address already in use" in fatal[-1]:
                    raise _PortClash(fatal[-1])
                raise fail(f"{name}: {fatal[-1].strip()}")
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise fail(f"{name} exited with status {proc.returncode}")

    def start_slurm(deadline: float) -> None:
        cluster.slurmctld_port, cluster.slurmd_port = _free_ports(2)
        conf.write_text(
            _slurm_conf(
                node=node,
                cpus=cpus,
                real_memory_mb=real_memory_mb,
                ctld_port=cluster.slurmctld_port,
                slurmd_port=cluster.slurmd_port,
                munge_socket=munge_socket,
                state=state,
                spool=spool,
                run=run,
                log=log,
                etc=etc,
            )
        )
        start("slurmctld", [binaries["slurmctld"], "-D", "-c", "-i", "-f", str(conf)])

        def ctld_up() -> bool:
            check_daemons()
            res = cluster.run(binaries["scontrol"], "ping", check=False, timeout=15)
            return res.returncode == 0 and "is UP" in res.stdout

        if not _wait_for(ctld_up, max(1.0, deadline - time.monotonic()), interval=0.3):
            raise fail("slurmctld does not answer 'scontrol ping'")

        start("slurmd", [binaries["slurmd"], "-D", "-f", str(conf), "-N", node])

        def node_idle() -> bool:
            check_daemons()
            return cluster.node_state().lower().startswith("idle")

        if not _wait_for(node_idle, max(1.0, deadline - time.monotonic()), interval=0.3):
            raise fail(f"node {node} is not idle (sinfo says {cluster.node_state()!r})")

    try:
        deadline = time.monotonic() + start_timeout
        start(
            "munged",
            [
                binaries["munged"],
                "--foreground",
                "--force",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--pid-file={run / 'munged.pid'}",
                f"--log-file={log / 'munged.log'}",  # unused with --foreground (stderr instead)
                f"--seed-file={munge_dir / 'munged.seed'}",
                "--num-threads=2",
            ],
        )

        def munge_up() -> bool:
            check_daemons()
            return munge_socket.exists()

        if not _wait_for(munge_up, max(1.0, deadline - time.monotonic()), interval=0.05):
            raise fail(f"munged socket {munge_socket} did not appear")

        for attempt in range(3):
            try:
                start_slurm(deadline)
                break
            except _PortClash as exc:
                # Another process took a port between choosing and binding it: stop slurm (not
                # munged) and try again with fresh ports.
                for name in ("slurmd", "slurmctld"):
                    proc = cluster.procs.pop(name, None)
                    if proc is not None:
                        _stop_popen(proc, grace=1)  # after a fatal error it may ignore SIGTERM
                munged_pid = cluster.procs["munged"].pid
                _terminate([p for p in cluster.descendants() if p != munged_pid], grace=1)
                for name in ("slurmctld", "slurmd"):
                    if logs[name].exists():
                        logs[name].rename(logs[name].with_suffix(f".log.clash{attempt}"))
                if attempt == 2:
                    raise fail(f"port clash three times: {exc}") from exc

        yield cluster
    finally:
        try:
            _shutdown(cluster)
        finally:
            if short_dir is not None:
                shutil.rmtree(short_dir, ignore_errors=True)
