"""Run one of the study's notebooks headlessly with papermill (what the workflow's notebook jobs
call), and refuse what papermill only warns about.

The kernel is started over IPC sockets (no TCP port, no "running over TCP without encryption"
warning), as the ``python3`` kernel of the running interpreter, with the notebook folder as its
working directory, this checkout's package first on its path, and matplotlib's inline backend (an
``MPLBACKEND`` in the environment would drop every figure).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import NotebookFailed  # noqa: F401  (raised here, defined without imports)
from .paths import NOTEBOOKS_DIR, REPO_ROOT

KERNEL = "python3"  # resolved by jupyter_client to the running interpreter


def notebook_path(stem: str) -> Path:
    """``notebooks/<stem>.ipynb``.

    Raises:
        ValueError: no such notebook (the message lists them).
    """
    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        valid = ", ".join(sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")))
        raise ValueError(f"no notebook {stem!r} in {NOTEBOOKS_DIR}; valid: {valid}")
    return path


def check_parameters(stem: str, parameters: dict[str, Any]) -> None:
    """Refuse parameters the notebook does not declare (papermill only warns and injects them).

    Raises:
        ValueError: naming the unknown parameters and the declared ones.
    """
    import papermill

    declared = papermill.inspect_notebook(str(notebook_path(stem)))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{stem}: unknown parameter(s) {unknown}; declared: {sorted(declared)}")


def _ipc_kernel_manager():
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        """A kernel manager whose kernels talk over IPC sockets in a private folder."""

        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            super().__init__(**kwargs)
            # IPC socket files are named <ip>-<port>: keep them out of the notebook folder.
            self.ip = str(Path(tempfile.mkdtemp(prefix="landscape-kernel-")) / "kernel")

    return IPCKernelManager


def execute_notebook(stem: str, out: str | os.PathLike, parameters: dict[str, Any]) -> Path:
    """Execute ``notebooks/<stem>.ipynb`` with ``parameters`` into ``out``.

    Raises:
        ValueError: unknown notebook or parameters (before anything runs).
        NotebookFailed: a cell raised; the output notebook is kept for reading and the message
            names the cell and the error.
    """
    import papermill

    check_parameters(stem, parameters)
    os.environ.pop("MPLBACKEND", None)
    # The kernel imports this checkout's package (not another install), like the job that runs it.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(notebook_path(stem)), str(out), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                                   kernel_manager_class=_ipc_kernel_manager())
    except papermill.PapermillExecutionError as exc:
        raise NotebookFailed(f"{stem} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                             f"(see {out})") from None
    return out
