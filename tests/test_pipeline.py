"""The notebook runner: parameter checks, stamps that re-run exactly what changed, failures."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from landscape_utils import pipeline, report

pytestmark = pytest.mark.slow  # starts a few Jupyter kernels


def _notebook(body: str):
    params = new_code_cell('arch = "cnn"  # architecture\nprofile = "full"  # profile\noverrides = {}  # settings')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell("x = 1"), new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    notebooks, profiles = tmp_path / "notebooks", tmp_path / "profiles"
    notebooks.mkdir()
    profiles.mkdir()
    (profiles / "tiny.toml").write_text("seeds = [0]\n")
    nbformat.write(_notebook("print(arch, profile, overrides)"), notebooks / "ok.ipynb")
    nbformat.write(_notebook("raise RuntimeError('probe blew up')"), notebooks / "bad.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(pipeline, "PROFILES_DIR", profiles)
    monkeypatch.setenv("LANDSCAPE_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path


def test_stamps_skip_unchanged_and_rerun_changed(sandbox):
    out, ran = pipeline.run_notebook("ok", "tiny", "mlp", {})
    assert ran and out == sandbox / "outputs" / "tiny" / "executed" / "mlp" / "ok.ipynb"
    assert "mlp tiny {}" in out.read_text()
    assert pipeline.run_notebook("ok", "tiny", "mlp", {})[1] is False          # nothing changed
    assert pipeline.run_notebook("ok", "tiny", "mlp", {"seeds": [1]})[1] is True  # parameters changed
    (sandbox / "profiles" / "tiny.toml").write_text("seeds = [0, 1]\n")
    assert pipeline.run_notebook("ok", "tiny", "mlp", {"seeds": [1]})[1] is True  # profile changed
    upstream = [out]
    assert pipeline.run_notebook("ok", "tiny", "cnn", {}, upstream)[1] is True
    assert pipeline.run_notebook("ok", "tiny", "cnn", {}, upstream)[1] is False
    out.with_suffix(".stamp").write_text("an upstream notebook was re-run")
    assert pipeline.run_notebook("ok", "tiny", "cnn", {}, upstream)[1] is True  # upstream changed


def test_unknown_parameter_is_refused_before_running(sandbox):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigma'\]; declared: \['arch', 'overrides', 'profile'\]"):
        pipeline.run_notebook("ok", "tiny", "mlp", {}, extra={"sigma": 1})
    assert not (sandbox / "outputs").exists()


def test_failed_notebook_keeps_its_output_without_stamp_and_the_report_refuses_it(sandbox):
    with pytest.raises(pipeline.NotebookFailed, match="bad .*failed in cell.*RuntimeError: probe blew up"):
        pipeline.run_notebook("bad", "tiny", "mlp", {})
    out = sandbox / "outputs" / "tiny" / "executed" / "mlp" / "bad.ipynb"
    assert out.is_file() and not out.with_suffix(".stamp").exists()
    with pytest.raises(report.NotebookFailedError, match=r"bad.ipynb.*raise RuntimeError.*probe blew up"):
        report.load_executed(out)


@pytest.mark.parametrize("kwargs, message", [
    ({"profile": "nope", "archs": ["mlp"]}, "unknown profile 'nope'"),
    ({"profile": "smoke", "archs": ["vgg"]}, "unknown architecture 'vgg'"),
    ({"profile": "smoke", "archs": ["mlp"], "overrides": {"lr": -1.0}}, "lr must be a positive"),
    ({"profile": "smoke", "archs": ["mlp"], "notebooks": ["07_extra"]}, r"unknown notebook\(s\)"),
])
def test_bad_study_settings_fail_before_any_notebook(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.setenv("LANDSCAPE_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(pipeline, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    with pytest.raises(ValueError, match=message):
        pipeline.run_study(**kwargs)
