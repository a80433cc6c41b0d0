"""The study's numbers as plain JSON: ``outputs/<profile>/results/<arch>.json``.

One file per architecture, one top-level key per notebook (``training``, ``curvature``,
``flatness``, ``slices``, ``connectivity``). Several notebooks may write the same file at
once (``make -j``): each update happens under a file lock and lands by atomic rename.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .study import output_dir

SECTIONS = ("training", "curvature", "flatness", "slices", "connectivity")


def results_path(profile: str, arch: str) -> Path:
    return output_dir(profile) / "results" / f"{arch}.json"


def to_plain(value: Any) -> Any:
    """``value`` with numpy/torch scalars and arrays turned into JSON types.

    Raises:
        ValueError: on NaN or infinity: a result that is not a number is refused, not saved.
    """
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"refusing to save a non-finite number ({value})")
    return value


def save_results(profile: str, arch: str, section: str, values: dict[str, Any],
                 path: Path | None = None) -> Path:
    """Replace ``section`` of the architecture's results file with ``values``.

    Raises:
        ValueError: unknown section, or a non-finite number anywhere in ``values``.
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown results section {section!r}; valid: {', '.join(SECTIONS)}")
    plain = to_plain(values)
    path = path or results_path(profile, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_text()) if path.exists() else {}
        current[section] = plain
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(current, indent=1, sort_keys=True))
        tmp.replace(path)
    return path


def load_results(profile: str, arch: str, path: Path | None = None) -> dict[str, Any]:
    """The architecture's results file (``{}`` when none was written yet)."""
    path = path or results_path(profile, arch)
    return json.loads(path.read_text()) if path.exists() else {}
