"""End to end: the smoke profile's five notebooks x three architectures, the comparison and
the report, built once per session into a temporary outputs folder; then the report is
checked as a reader would meet it."""

from __future__ import annotations

import json
import re

import pytest

from landscape_utils import pipeline, report
from landscape_utils.study.models import MODELS
from tests.test_report_browser import browser_check, require_browser

ARCHS = sorted(MODELS)
FIGURES = {"training_curves", "init_to_final", "eigenvalue_convergence", "spectral_density", "flatness",
           "slices_train", "slices_test", "surface", "connectivity_losses", "connectivity_errors"}
COMPARISON_FIGURES = {"test_accuracy", "lambda_max", "flatness", "slices", "barrier"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    outputs = tmp_path_factory.mktemp("outputs")
    mp = pytest.MonkeyPatch()
    mp.setenv("LANDSCAPE_OUTPUTS", str(outputs))
    mp.setenv("LANDSCAPE_RUNS", str(outputs / "runs"))
    try:
        html_path = pipeline.run_study("smoke", ARCHS, jobs=2)
        yield outputs / "smoke", html_path
    finally:
        mp.undo()


def test_every_notebook_ran_and_is_stamped(smoke):
    profile_dir, _ = smoke
    for arch in ARCHS:
        for nb in pipeline.PROBE_NOTEBOOKS:
            assert (profile_dir / "executed" / arch / f"{nb}.stamp").is_file(), (arch, nb)
    assert (profile_dir / "executed" / "06_comparison.stamp").is_file()


def test_report_has_no_errors_and_unique_targets(smoke):
    _, html_path = smoke
    html = html_path.read_text()
    assert report.check_report_html(html) == []
    text = report.html_text(html)
    for bad in ("Traceback", "Error:", "PapermillExecutionError", "nan", "NaN"):
        assert bad not in text.split(), bad
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for target in re.findall(r'href="#([^"]+)"', html):
        assert ids.count(target) == 1, target


def test_every_expected_figure_exists_and_is_embedded(smoke):
    profile_dir, html_path = smoke
    for arch in ARCHS:
        for name in FIGURES:
            path = profile_dir / "figures" / arch / f"{name}.png"
            assert path.is_file() and path.stat().st_size > 5000, path
    for name in COMPARISON_FIGURES:
        assert (profile_dir / "figures" / "comparison" / f"{name}.png").stat().st_size > 5000
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', html_path.read_text())
    assert len(images) >= len(ARCHS) * len(FIGURES) + len(COMPARISON_FIGURES) - 2


def test_report_reads_like_the_study(smoke):
    _, html_path = smoke
    outline = [title for _, _, title in report.report_outline(html_path.read_text())]
    joined = " | ".join(outline)
    order = ["Training", "Curvature", "Flatness", "slices", "connectivity", "Conclusion"]
    positions = [next(i for i, t in enumerate(outline) if w.lower() in t.lower()) for w in order]
    assert positions == sorted(positions), joined


def test_numbers_in_the_report_equal_the_results_files(smoke):
    profile_dir, html_path = smoke
    text = report.html_text(html_path.read_text())
    for arch in ARCHS:
        res = json.loads((profile_dir / "results" / f"{arch}.json").read_text())
        assert set(res) == {"training", "curvature", "flatness", "slices", "connectivity"}
        for run in res["curvature"]["runs"]:
            assert f"{run['top']['eigenvalues'][0]:.4g}" in text  # per-seed λ1 table
        lam = res["curvature"]["lambda_max"]
        assert f"{lam['mean']:.3g} [{lam['low']:.3g}, {lam['high']:.3g}]" in text  # comparison tables
        for run in res["training"]["runs"]:
            assert f"{100 * run['test_acc']:.2f}%" in text
        for pair in res["connectivity"]["runs"]:
            assert f"{pair['train']['loss_barrier']['barrier']:.3g}" in text


def test_second_run_skips_everything(smoke, monkeypatch):
    profile_dir, _ = smoke
    monkeypatch.setenv("LANDSCAPE_OUTPUTS", str(profile_dir.parent))
    monkeypatch.setenv("LANDSCAPE_RUNS", str(profile_dir.parent / "runs"))
    ran = []
    real = pipeline.run_notebook
    monkeypatch.setattr(pipeline, "run_notebook", lambda *a, **k: ran.append(r := real(*a, **k)) or r)
    pipeline.run_study("smoke", ARCHS)
    assert ran and not any(did for _, did in ran)


def test_report_in_a_real_browser(smoke):
    require_browser()
    _, html_path = smoke
    assert browser_check(html_path) == []
