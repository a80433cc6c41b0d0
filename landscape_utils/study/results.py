"""Results as plain files: JSON that another program can read, written atomically.

Every number is checked on the way out: NaN or infinity is refused, so a diverged probe says so
instead of leaving a file that plots as nothing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_plain(value: Any) -> Any:
    """``value`` with dataclasses (``to_dict``), numpy/torch scalars and arrays as JSON types.

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


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``to_plain(value)`` as JSON to ``path`` atomically (a temporary file renamed into
    place), creating the folder.

    Raises:
        ValueError: a non-finite number anywhere in ``value``.
    """
    path = Path(path)
    text = json.dumps(to_plain(value), indent=1, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
