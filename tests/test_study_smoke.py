"""End to end: the smoke study through the workflow (train, per-unit probes, one notebook per
section and architecture, the comparison, the report), once per session into a temporary outputs
folder; then the report is checked as a reader would meet it, and the workflow's promises: a
rerun does nothing, in seconds; the console stays clean."""

from __future__ import annotations

import json
import re
import time

import pytest

from landscape_utils.report import html as report
from landscape_utils.study.registry import ARCHITECTURES, SECTIONS
from landscape_utils.study.settings import open_study
from landscape_utils.study.units import noise_key, noise_path, section_units, unit_name
from tests.conftest import REPO, SNAKEMAKE_LOCAL, snakemake
from tests.test_report_browser import browser_check, require_browser

ARCHS = list(ARCHITECTURES)
FIGURES = {"training_curves", "init_to_final", "eigenvalue_convergence", "spectral_density", "flatness",
           "slices_train", "slices_test", "surface_s0", "connectivity_losses", "connectivity_errors",
           "sharpness_along_training", "lambda_vs_sample_size"}
COMPARISON_FIGURES = {"test_accuracy", "lambda_max", "flatness", "slices", "barrier_error_test", "barrier_loss_test",
                      "sharpness_vs_generalisation"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(smoke_study):
    study_dir, _, _ = smoke_study
    return study_dir, study_dir / "report.html"


def test_every_unit_notebook_and_summary_was_written(smoke):
    study_dir, _ = smoke
    settings = json.loads((study_dir / "settings.json").read_text())
    seeds = settings["settings"]["seeds"]
    cfg = open_study("smoke").config
    for arch in ARCHS:
        for seed in seeds:
            run = json.loads((study_dir / "runs" / arch / f"s{seed}.json").read_text())
            assert run["config"]["arch"] == arch and run["config"]["init_seed"] == seed
        for key, section in SECTIONS.items():
            assert (study_dir / "executed" / arch / f"{key}.ipynb").is_file()
            summary = json.loads((study_dir / "summaries" / key / f"{arch}.json").read_text())
            prov = summary["provenance"]
            assert prov["schema_version"] == 1 and prov["libraries"]["torch"] and prov["cpu_model"]
            assert prov["package_path"] == str(REPO / "landscape_utils")
            records = [r for path in (study_dir / "units" / key / arch).glob("part*.json")
                       for r in json.loads(path.read_text())["units"]]
            assert sorted(r["unit"] for r in records) == sorted(map(unit_name, section_units(section, cfg, arch)))
        noise = json.loads(noise_path(study_dir, arch).read_text())
        assert noise["key"] == noise_key(arch, cfg) and set(noise["sources"]) == {"random vectors", "probe set"}
    pairs = [json.loads(p.read_text())["units"] for p in (study_dir / "units" / "connectivity" / "cnn").glob("part*.json")]
    kinds = sorted(r["result"]["kind"] for block in pairs for r in block)
    assert kinds == ["independent", "same-data", "same-init"]  # one pair of each kind in the smoke profile
    assert (study_dir / "executed" / "comparison.ipynb").is_file()


def test_report_has_no_errors_and_unique_targets(smoke):
    _, html_path = smoke
    html = html_path.read_text()
    assert report.check_report_html(html) == []
    text = report.html_text(html)
    for bad in ("Traceback", "Error:", "PapermillExecutionError", "nan", "NaN", "checks passed", "it/s]"):
        assert bad not in text.split() and bad not in text, bad
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for target in re.findall(r'href="#([^"]+)"', html):
        assert ids.count(target) == 1, target
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html  # no stderr output (progress bars, warnings)


def test_report_names_the_settings_that_differ(smoke):
    study_dir, html_path = smoke
    text = report.html_text(html_path.read_text())
    diff = json.loads((study_dir / "settings.json").read_text())["differs_from_defaults"]
    assert "max_steps" in diff and "settings that differ from the study's defaults" in text
    for key in diff:
        assert key in text, key
    # The prose states the settings used, not the full study's: 40 steps on 4,096 images.
    assert "stopped after 40 steps" in text and "4,096 training images" in text and "3 epochs" not in text


def test_every_expected_figure_exists_and_is_embedded(smoke):
    study_dir, html_path = smoke
    for arch in ARCHS:
        for name in FIGURES:
            path = study_dir / "figures" / arch / f"{name}.png"
            assert path.is_file() and path.stat().st_size > 5000, path
    for name in COMPARISON_FIGURES:
        assert (study_dir / "figures" / "comparison" / f"{name}.png").stat().st_size > 5000
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', html_path.read_text())
    assert len(images) >= len(ARCHS) * len(FIGURES) + len(COMPARISON_FIGURES)


def test_report_reads_like_the_study(smoke):
    _, html_path = smoke
    outline = [title for _, _, title in report.report_outline(html_path.read_text())]
    order = [SECTIONS[k].title.split()[-1] for k in SECTIONS] + ["Conclusion"]
    positions = [next(i for i, t in enumerate(outline) if w.lower() in t.lower()) for w in order]
    assert positions == sorted(positions), outline


def test_numbers_in_the_report_equal_the_summaries(smoke):
    study_dir, html_path = smoke
    text = report.html_text(html_path.read_text())

    def summary(section, arch):
        return json.loads((study_dir / "summaries" / section / f"{arch}.json").read_text())["summary"]

    for arch in ARCHS:
        curv = summary("curvature", arch)
        for run in curv["runs"]:
            assert f"{run['top']['eigenvalues'][0]:.4g}" in text  # per-seed λ1 table
        lam = curv["lambda_max"]
        assert f"{lam['mean']:.3g} [{lam['low']:.3g}, {lam['high']:.3g}]" in text  # comparison table
        for run in summary("training", arch)["runs"]:
            assert f"{100 * run['final']['test_acc']:.2f}%" in text
        for pair in summary("connectivity", arch)["runs"]:
            assert f"{pair['paths']['straight']['train']['loss_barrier']['barrier']:.3g}" in text


def test_console_is_clean(smoke_study):
    _, output, _ = smoke_study
    assert "running over TCP without encryption" not in output
    assert "Traceback" not in output


def test_second_run_does_nothing_in_seconds(smoke_study, landscape_outputs_dir):
    started = time.time()
    proc = snakemake([*SNAKEMAKE_LOCAL, "--config", "profile=smoke"], landscape_outputs_dir)
    seconds = time.time() - started
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    assert seconds < 10, seconds


def test_progress_lines(smoke_study):
    from landscape_utils.study.progress import condense

    _, output, _ = smoke_study
    lines = list(condense(output.splitlines(), started=time.time()))
    done = [ln for ln in lines if re.match(r"^\[\d\d:\d\d\] \d+ of \d+ jobs done \(\d+%\)$", ln)]
    assert done and done[-1].split("] ")[1].startswith(done[-1].split()[3] + " of ")  # ends at n of n
    assert any(re.match(r"^\[\d\d:\d\d\] \d+ jobs to run$", ln) for ln in lines)


def test_report_in_a_real_browser(smoke):
    require_browser()
    _, html_path = smoke
    assert browser_check(html_path) == []
