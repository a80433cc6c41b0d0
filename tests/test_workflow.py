"""The workflow as a whole, in a temporary copy of the repository:

* the registries are the only place to change: a tiny fourth architecture and a dummy section
  registered in the copy (and nowhere else) run through the smoke study and reach the report;
* reruns: a `touch` or a comment reruns nothing; an edited notebook or job reruns exactly what
  depends on it;
* a dry run of a 10-seed study is fast.
"""

from __future__ import annotations

import json
import re
import shutil
import time

import nbformat
import pytest

from landscape_utils.report import html as report
from landscape_utils.study.settings import open_study
from tests.conftest import REPO, SNAKEMAKE_LOCAL, snakemake

pytestmark = pytest.mark.slow

TINY_MODEL = '''
"""A tiny MLP registered only in this copy of the repository (a test's fourth architecture)."""
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 16), nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)).relu())
'''

DUMMY_SECTION = '''
"""A dummy section registered only in this copy: the parameter count and accuracy of each run."""
from dataclasses import dataclass

from landscape_utils.study.stats import Interval
from landscape_utils.study.summaries import Summary, _iv


def dummy_job(arch, seed, cfg, upstream):
    from landscape_utils.study.jobs import _run, probe_data

    run, probe = _run(arch, seed, cfg), probe_data(cfg)
    return {"seed": seed, "probe_data": probe.to_dict(), "value": float(run.final_metrics["test_acc"]),
            "parameters": sum(p.numel() for p in run.model().parameters())}


@dataclass(frozen=True)
class DummySummary(Summary):
    value: Interval
    parameters: int


def summarise_dummy(arch, records, settings):
    res = [r["result"] for r in records.values()]
    return DummySummary(arch=arch, units=tuple(r["unit"] for r in records.values()),
                        probe_data=res[0]["probe_data"]["description"], value=_iv(r["value"] for r in res),
                        parameters=res[0]["parameters"])
'''

REGISTRATION = '''

# --- registered by tests/test_workflow.py in a temporary copy ---
ARCHITECTURES["tiny"] = Architecture("tiny", "landscape_utils.study.tiny_model:TinyNet", "Tiny MLP", "#8172B3",
                                     12_730, "784 → 16 (ReLU) → 10")
SECTIONS["dummy"] = Section("dummy", "07_dummy", "A dummy section", "landscape_utils.study.dummy_section:dummy_job",
                            "landscape_utils.study.dummy_section:summarise_dummy", settings=PROBE_SET_SETTINGS)
'''


def dummy_notebook() -> nbformat.NotebookNode:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    params = new_code_cell('arch = "cnn"  # architecture\nprofile = "full"  # profile\noverrides = {}  # overrides\n'
                           'study_dir = ""  # where to write', metadata={"tags": ["parameters"]})
    return new_notebook(cells=[
        new_markdown_cell("# 7. A dummy section\n\nDUMMY-METHOD-TEXT", metadata={"tags": ["method"]}), params,
        new_code_cell("from IPython.display import Markdown, display\n"
                      "from landscape_utils.study import settings, summaries\n"
                      "study, out = settings.notebook_settings(arch, profile, overrides, study_dir)\n"
                      "records = summaries.section_records('dummy', arch, study.config, out)\n"
                      "summary = summaries.summarise('dummy', arch, records, study.config)\n"
                      "summaries.save_summary('dummy', summary, out)\n"
                      "display(Markdown(f'DUMMY-VALUE {summary.value.mean:.4f} with {summary.parameters} parameters'))"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


@pytest.fixture(scope="module")
def copy(tmp_path_factory, smoke_study, landscape_outputs_dir):
    """A copy of the repository with a fourth architecture and a dummy section registered, its
    smoke study run (sharing the session's run and unit caches), and its environment."""
    root = tmp_path_factory.mktemp("repo")
    for name in ("landscape_utils", "workflow", "notebooks", "profiles"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    (root / "landscape_utils" / "study" / "tiny_model.py").write_text(TINY_MODEL)
    (root / "landscape_utils" / "study" / "dummy_section.py").write_text(DUMMY_SECTION)
    with open(root / "landscape_utils" / "study" / "registry.py", "a") as fh:
        fh.write(REGISTRATION)
    nbformat.write(dummy_notebook(), root / "notebooks" / "07_dummy.ipynb")
    outputs = tmp_path_factory.mktemp("copy-outputs")
    env = {"LANDSCAPE_RUNS": str(landscape_outputs_dir / "runs"), "LANDSCAPE_CACHE": str(landscape_outputs_dir / "cache"),
           "PYTHONPATH": str(root)}
    proc = snakemake([*SNAKEMAKE_LOCAL, "--config", "profile=smoke"], outputs, cwd=root, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, outputs, env


def dry_run_jobs(root, outputs, env, *config) -> dict[str, int]:
    """rule -> number of jobs a dry run would run (empty when nothing is to be done)."""
    proc = snakemake([*SNAKEMAKE_LOCAL, "--dry-run", "--config", "profile=smoke", *config], outputs, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("Reasons:")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_a_registered_architecture_and_section_reach_the_report(copy):
    root, outputs, _ = copy
    study = outputs / "smoke"
    unit = json.loads((study / "units" / "dummy" / "tiny" / "part1of1.json").read_text())["units"][0]
    assert unit["provenance"]["package_path"] == str(root / "landscape_utils")  # the copy ran, not the install
    assert unit["result"]["parameters"] == 12_730
    html = (study / "report.html").read_text()
    assert report.check_report_html(html) == []
    text = report.html_text(html)
    outline = [t for _, _, t in report.report_outline(html)]
    assert "7. A dummy section" in outline and outline.count("Results: Tiny MLP") == 7  # 6 sections + dummy
    assert "DUMMY-METHOD-TEXT" in text and text.count("DUMMY-VALUE") == 4  # one per architecture
    assert "Tiny MLP" in text.split("Conclusion")[0]  # in the comparison's tables too
    assert outline.index("7. A dummy section") > outline.index("6. Mode connectivity")


@pytest.mark.parametrize("edit, expected", [
    ("touch", {}),
    ("comment", {}),
    ("notebook", {"notebook": 4, "comparison": 1, "report": 1, "all": 1}),
    ("job", {"probe": 4, "notebook": 4, "comparison": 1, "report": 1, "all": 1}),  # one block per architecture
])
def test_reruns_follow_contents(copy, edit, expected):
    root, outputs, env = copy
    nb, job = root / "notebooks" / "07_dummy.ipynb", root / "landscape_utils" / "study" / "dummy_section.py"
    saved = {p: p.read_text() for p in (nb, job, root / "landscape_utils" / "probes" / "hessian.py")}
    try:
        if edit == "touch":
            for path in [*root.glob("notebooks/*.ipynb"), *root.glob("landscape_utils/**/*.py"), *root.glob("profiles/*")]:
                path.touch()
        elif edit == "comment":
            hessian = root / "landscape_utils" / "probes" / "hessian.py"
            hessian.write_text(hessian.read_text().replace('"""', '"""An edited docstring. ', 1) + "\n# a comment\n")
        elif edit == "notebook":
            nb.write_text(nb.read_text().replace("DUMMY-METHOD-TEXT", "DUMMY-METHOD-TEXT, edited"))
        else:
            job.write_text(job.read_text().replace('float(run.final_metrics["test_acc"])',
                                                   'float(run.final_metrics["test_loss"])'))
        assert dry_run_jobs(root, outputs, env) == expected
    finally:
        for path, text in saved.items():
            path.write_text(text)


def test_dry_run_of_a_ten_seed_study_is_fast(copy):
    root, outputs, env = copy
    started = time.time()
    jobs = dry_run_jobs(root, outputs, env, "set=seeds=[0,1,2,3,4,5,6,7,8,9]", "block=1")
    seconds = time.time() - started
    archs, seeds, pairs, controls = 4, 10, 3, 2  # smoke: one pair of each kind, two control runs
    cfg = open_study("smoke", {"seeds": list(range(seeds))}).config
    cells = sum(len(cfg.dynamics_cells(a)) for a in ("mlp", "cnn", "rescnn", "tiny"))  # one job per cell too
    assert jobs["train"] == archs * (seeds + controls) and jobs["probe"] == archs * (5 * seeds + pairs) + cells
    assert seconds < 5, seconds
