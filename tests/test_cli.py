"""The command line: bad input gets one `error:` line (no traceback) and exit status 2, before
anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("args, message", [
    (["probe", "curvature", "--arch", "vit", "--seed", "0"], "unknown architecture 'vit'; valid: mlp, cnn, rescnn"),
    (["probe", "sharpness", "--arch", "cnn", "--seed", "0"], "unknown section 'sharpness'"),
    (["probe", "connectivity", "--arch", "cnn", "--seed", "0"], "takes pairs (--pair A B)"),
    (["probe", "curvature", "--arch", "cnn", "--seed", "9", "--profile", "smoke"], "has no unit s9"),
    (["run", "--arch", "cnn", "--seed", "0", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "--arch", "cnn", "--seed", "0", "--set", "lr=-1"], "lr must be a positive finite number"),
    (["run", "--arch", "cnn", "--seed", "0", "--set", "sigma=1"], r"unknown setting(s) ['sigma']"),
    (["run", "--arch", "cnn", "--seed", "0", "--set", "lr"], "a setting is key=value"),
    (["run", "--arch", "cnn", "--run", "i1d1000", "--profile", "smoke"], "run i1d1000 is not one of the study's runs (s0, i0d1000"),
    (["run", "--arch", "cnn", "--run", "x3", "--profile", "smoke"], "a run is 's<seed>' or 'i<init seed>d<data seed>'"),
    (["probe", "connectivity", "--arch", "cnn", "--units", "s0-i0d7", "--profile", "smoke"], "has no unit s0-i0d7"),
    (["notebook", "09_nothing", "--out", "x.ipynb"], "no notebook '09_nothing'"),
    (["train", "--arch", "nope"], "unknown architecture 'nope'"),
])
def test_bad_input_is_one_error_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "landscape_utils", *args], cwd=tmp_path, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", "LANDSCAPE_OUTPUTS": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.glob("*/*.json"))


def test_missing_mnist_offline_says_where_to_put_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "landscape_utils", "train", "--arch", "mlp", "--max-steps", "1",
                           "--data-dir", str(tmp_path / "nowhere"), "--no-download", "--runs-dir", str(tmp_path)],
                          text=True, capture_output=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "MNIST/raw" in proc.stderr and "Traceback" not in proc.stderr


def test_settings_prints_the_study_folder(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LANDSCAPE_OUTPUTS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "landscape_utils", "settings", "--set", "lr=0.02"], text=True,
                         capture_output=True, env=env, cwd=REPO).stdout.strip()
    assert out.startswith(str(tmp_path / "full-")) and (tmp_path / out.split("/")[-1] / "settings.json").is_file()
    listed = subprocess.run([sys.executable, "-m", "landscape_utils", "variants"], text=True, capture_output=True,
                            env=env, cwd=REPO).stdout
    assert out in listed and "lr=0.02" in listed
