"""What made a result: source digests for cache keys, and the provenance every results file records.

A *source digest* hashes Python modules after dropping what cannot change behaviour (comments,
docstrings, formatting): the module is parsed, docstrings are removed and the tree is unparsed, so
an edit to a comment keeps the digest and an edit to code changes it. Training runs and per-seed
probe results are keyed by the digests of the sources that determine them, so a code change
recomputes exactly what it affects and no cache version has to be bumped by hand.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Bump when the layout of a results file changes (readers check it).
SCHEMA_VERSION = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "numpy", "scipy", "matplotlib", "seaborn", "papermill", "nbconvert", "snakemake")


def normalised_source(path: str | os.PathLike) -> str:
    """The module's code without comments, docstrings or formatting (``ast.unparse``)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@functools.cache
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    # Keyed by (path, mtime, size) so a long-lived kernel notices an edited file.
    return hashlib.sha256(normalised_source(path).encode()).hexdigest()


def source_digest(paths: Iterable[str | os.PathLike]) -> str:
    """One hex digest of several modules' normalised code (order-independent, by file name).

    Raises:
        FileNotFoundError: a path does not exist. SyntaxError: a file is not Python.
    """
    h = hashlib.sha256()
    for path in sorted({Path(p).resolve() for p in paths}):
        st = path.stat()
        rel = path.relative_to(PACKAGE_DIR.parent) if path.is_relative_to(PACKAGE_DIR.parent) else path.name
        h.update(f"{rel}\0{_file_digest(str(path), st.st_mtime_ns, st.st_size)}\0".encode())
    return h.hexdigest()


def module_file(obj: Any) -> Path:
    """The source file of the module defining ``obj`` (a class or function)."""
    return Path(sys.modules[obj.__module__].__file__).resolve()


def package_digest() -> str:
    """Digest of every module of the package (recorded as provenance, not used as a key)."""
    return source_digest(PACKAGE_DIR.rglob("*.py"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(device: str = "cpu") -> dict[str, Any]:
    """Where and with what a result was computed: package version and source digest, library
    versions, Python, device (and GPU name), CPU model, math threads, host and schema version."""
    from .. import __version__

    torch = sys.modules.get("torch")  # its thread count where it is loaded; never imported for this
    info = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "package_source_digest": package_digest(),
        "package_path": str(PACKAGE_DIR),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "device": device,
        "cpu_model": _cpu_model(),
        "torch_threads": torch.get_num_threads() if torch else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "platform": platform.platform(),
    }
    if device == "cuda" and torch and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every key is hashed in."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def short_hash(value: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
