"""Where things live: the repository, its profiles and notebooks, and the outputs folder.

``$LANDSCAPE_OUTPUTS`` moves every output (studies, caches, runs) elsewhere, e.g. for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = REPO_ROOT / "profiles"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
ENV_OUTPUTS_DIR = "LANDSCAPE_OUTPUTS"


def outputs_root() -> Path:
    """``$LANDSCAPE_OUTPUTS`` when set, else the repository's ``outputs/``."""
    return Path(os.environ.get(ENV_OUTPUTS_DIR) or REPO_ROOT / "outputs").resolve()
