"""The report builder on tiny executed notebooks built in code (2 architectures x 5 + summary).

The checks here (``report.check_report_html``, ``report.html_text``, ``report.numbers_in``) are the
same ones the end-to-end smoke test runs on the real report.
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from pathlib import Path

import pytest

from landscape_utils.report import html as report

FIXTURES = Path(__file__).parent / "fixtures" / "report"
sys.path.insert(0, str(FIXTURES))
import fixture_notebooks as fx  # noqa: E402

ARCHS = ("mlp", "cnn")
N_SECTIONS = len(fx.PROBES)  # one fixture notebook per registered section


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A pristine executed-notebook tree; copy it before changing anything."""
    return fx.write_tree(tmp_path_factory.mktemp("report") / "smoke", ARCHS)


@pytest.fixture(scope="module")
def built(tree) -> str:
    out = report.build_report(tree, tree / "report.html", ARCHS)
    return out.read_text(encoding="utf-8")


@pytest.fixture
def copy_tree(tree, tmp_path) -> Path:
    dst = tmp_path / "smoke"
    shutil.copytree(tree / "executed", dst / "executed")
    return dst


# --------------------------------------------------------------------------- the built report


def test_report_passes_its_checks(built):
    assert report.check_report_html(built) == []


def test_outline_order(built):
    outline = [(lv, text) for lv, _, text in report.report_outline(built)]
    expected = [(1, fx.REPORT_TITLE), (2, "Contents"), (2, "Introduction"), (3, "Models"), (3, "Data and the loss L(θ)")]
    for _, _, title in fx.PROBES:
        expected += [(2, title), (3, "Method")]
        for label in ("MLP", "CNN"):
            expected += [(3, f"Results: {label}"), (4, "Setup"), (4, "Checks")]
        expected += [(3, f"{title} across architectures"), (4, "Analysis")]
    expected.append((2, "Conclusion"))
    assert outline == expected


def test_ids_unique_and_toc_targets(built):
    ids = re.findall(r'\sid="([^"]+)"', built)
    assert len(ids) == len(set(ids))
    nav = re.search(r"<nav[^>]*report-toc.*?</nav>", built, re.S).group(0)
    hrefs = re.findall(r'href="#([^"]+)"', nav)
    assert len(hrefs) == len(set(hrefs)) == 3 + N_SECTIONS * 5 + 1  # intro + 2 subsections, sections x (section + 4), conclusion
    assert '<a href="#introduction-data-and-the-loss-l">Data and the loss <math' in nav  # math kept in TOC
    headings = {i for _, i, _ in report.report_outline(built)}
    assert set(hrefs) <= headings
    # every heading's own anchor link points at itself
    for hid, href in re.findall(r'<h\d id="([^"]+)">.*?<a class="anchor-link" href="#([^"]+)"', built):
        assert hid == href


def test_no_code_no_leaks_no_errors(built):
    text = report.html_text(built)
    for leak in fx.LEAKS + ("print(result)", "plt.show()", "Traceback", "\x1b["):
        assert leak not in text
    markup = re.sub(r"<style.*?</style>", "", built, flags=re.S)
    assert "jp-InputArea-editor" not in markup and "highlight" not in markup
    assert "application/vnd.jupyter.widget" not in built
    # tqdm's carriage-return rewrites keep only the final bar; ANSI colour is stripped
    assert "10/10" not in text and "0%|" not in text  # stderr (progress bars) never reaches the report
    assert text.count("all checks OK") == 2 * N_SECTIONS


def test_images_embedded(built):
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', built)
    pngs = [s for s in srcs if s.startswith("data:image/png;base64,")]
    svgs = [s for s in srcs if s.startswith("data:image/svg+xml;base64,")]
    # 2 archs x one figure per section + one summary figure per section + 1 local markdown image; 2 inline SVGs
    assert (len(pngs), len(svgs), len(srcs)) == (3 * N_SECTIONS + 1, 2, 3 * N_SECTIONS + 3)
    for src in pngs:
        data = base64.b64decode(src.split(",", 1)[1])
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 30
    for src in svgs:  # SVG figures are isolated in <img>: their internal ids cannot collide
        assert b'id="patch_1"' in base64.b64decode(src.split(",", 1)[1])
    assert "<svg" not in re.sub(r"<style.*?</style>", "", built, flags=re.S)


def test_refuses_missing_markdown_image(copy_tree):
    (copy_tree / "executed" / "intro_diagram.png").unlink()
    with pytest.raises(report.ReportError, match="image 'intro_diagram.png' not found"):
        report.assemble_notebook(copy_tree, ARCHS)


def test_offline(built):
    assert not re.search(r"<(script|link|img|iframe|source)\b[^>]*\s(src|href)=[\"']?(https?:)?//", built)
    assert not re.search(r"<script\b[^>]*\ssrc=", built)
    assert "cdnjs" not in built and "mathjax" not in built.lower()
    assert "<math" in built  # TeX became MathML


def test_method_cells_once_results_per_arch(built):
    text = report.html_text(built)
    for _, _, title in fx.PROBES:
        assert text.count(f"for {title.lower()} and plot") == 1  # method: first arch only
    for a, arch in enumerate(ARCHS):
        for p in range(5):
            assert f"result {round(1.5 + 10 * a + p / 4, 3)} for {arch}" in text


def test_numbers_shown(built):
    numbers = report.numbers_in(report.html_text(built))
    for value in (1.5, 1.75, 11.5, 12.5, 0.05):
        assert value in numbers


def test_include_code(tree, tmp_path):
    html = report.build_report(tree, tmp_path / "r.html", ARCHS, include_code=True).read_text()
    assert report.check_report_html(html, include_code=True) == []
    assert "code inputs are shown" in report.check_report_html(html)
    text = report.html_text(html)
    assert "print(result)" in text and "import numpy" in text
    assert "summary_figure()" in text and "plot_comparison()" not in text  # remove-input honoured
    for leak in fx.LEAKS + ("arch = 'mlp'", '# Parameters'):
        assert leak not in text


def test_cli(tree, tmp_path, capsys, monkeypatch):
    from landscape_utils.__main__ import main

    monkeypatch.setenv("LANDSCAPE_OUTPUTS", str(tmp_path / "outputs"))
    shutil.copytree(tree, tmp_path / "outputs" / "smoke")
    out = tmp_path / "cli.html"
    # The fixture has two architectures; the CLI reports every registered one, so it names the third as missing.
    assert main(["report", "--profile", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, however many notebooks are missing
    assert "rescnn" in err and "Traceback" not in err and not out.exists()
    assert main(["report", "--profile", "smoke", "--set", "lr=0.5", "--out", str(out)]) == 1
    assert "comparison.ipynb" in capsys.readouterr().err


# --------------------------------------------------------------------------- refusals


def _rewrite(path: Path, change) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb = change(nb) or nb
    nbformat.write(nb, path)


def test_refuses_failed_notebook(copy_tree):
    path = copy_tree / "executed" / "cnn" / "curvature.ipynb"
    # cell 5 is "print(result)", In [3]; papermill's two banner cells move it to index 7
    _rewrite(path, lambda nb: fx.fail_like_papermill(nb, 5, "FloatingPointError", "Lanczos diverged"))
    with pytest.raises(report.NotebookFailedError) as err:
        report.build_report(copy_tree, copy_tree / "report.html", ARCHS)
    msg = str(err.value)
    for part in (str(path), "cell 7", "In [3]", "'print(result)'", "FloatingPointError: Lanczos diverged"):
        assert part in msg, (part, msg)
    assert not (copy_tree / "report.html").exists()


def test_refuses_real_papermill_failure(copy_tree):
    path = copy_tree / "executed" / "mlp" / "slices.ipynb"
    shutil.copy(FIXTURES / "failed_papermill.ipynb", path)
    with pytest.raises(report.NotebookFailedError) as err:
        report.assemble_notebook(copy_tree, ARCHS)
    msg = str(err.value)
    for part in (str(path), "cell 6", "In [4]", "'residual = 3.5'",
                 "FloatingPointError: Lanczos did not converge: residual 3.5"):
        assert part in msg, (part, msg)


@pytest.mark.parametrize(
    "change, expected",
    [
        # a traceback printed to stderr (a caught exception, logged) is refused
        (lambda nb: nb.cells[6].outputs.__setitem__(0, fx.new_output(
            "stream", name="stderr", text="Traceback (most recent call last):\n  File x\nKeyError: 'loss'\n")),
         "traceback in stderr: KeyError: 'loss'"),
        # papermill flagged the notebook, no error output kept
        (lambda nb: nb.metadata.papermill.__setitem__("exception", True), "papermill recorded an exception"),
        # a code cell that never ran (e.g. the source notebook copied instead of executed)
        (lambda nb: nb.cells[7].__setitem__("execution_count", None), "was never executed"),
    ],
)
def test_refuses_incomplete_runs(copy_tree, change, expected):
    path = copy_tree / "executed" / "mlp" / "flatness.ipynb"
    _rewrite(path, change)
    with pytest.raises(report.NotebookFailedError, match=re.escape(expected)) as err:
        report.assemble_notebook(copy_tree, ARCHS)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("rel", ["executed/cnn/slices.ipynb", "executed/comparison.ipynb"])
def test_refuses_missing_notebook(copy_tree, rel):
    (copy_tree / rel).unlink()
    with pytest.raises(report.NotebookMissingError) as err:
        report.assemble_notebook(copy_tree, ARCHS)
    assert str(copy_tree / rel) in str(err.value) and "make smoke" in str(err.value)


def test_refuses_untagged_summary_cell(copy_tree):
    def add(nb):
        nb.cells.append(fx.new_code_cell("table()", execution_count=99, outputs=[
            fx.new_output("stream", name="stdout", text="orphan\n")]))
    _rewrite(copy_tree / "executed" / "comparison.ipynb", add)
    with pytest.raises(report.ReportError, match="section:<key>"):
        report.assemble_notebook(copy_tree, ARCHS)


def test_names_every_missing_notebook(copy_tree):
    with pytest.raises(report.NotebookMissingError, match=f"{N_SECTIONS} executed notebook") as err:
        report.assemble_notebook(copy_tree, ("mlp", "cnn", "rescnn"))
    for _, stem, _ in fx.PROBES:
        assert str(copy_tree / "executed" / "rescnn" / f"{stem}.ipynb") in str(err.value)


def test_failure_reported_with_missing(copy_tree):
    _rewrite(copy_tree / "executed" / "mlp" / "training.ipynb",
             lambda nb: fx.fail_like_papermill(nb, 6, "RuntimeError", "NaN loss"))
    (copy_tree / "executed" / "cnn" / "connectivity.ipynb").unlink()
    with pytest.raises(report.NotebookFailedError, match="RuntimeError: NaN loss") as err:
        report.assemble_notebook(copy_tree, ARCHS)
    assert "1 executed notebook(s) missing" in str(err.value)


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\r  0%|  | 0/3\r 33%|# | 1/3\r100%|##| 3/3\n", "100%|##| 3/3\n"),
        ("a\nb\r\n", "a\nb\n"),  # Windows line ends keep the line
        ("\x1b[31mred\x1b[0m plain\n", "red plain\n"),
        ("epoch 1\repoch 2\nloss 0.5\n", "epoch 2\nloss 0.5\n"),
        ("", ""),
    ],
)
def test_clean_stream_text(text, expected):
    assert report.clean_stream_text(text) == expected


def test_shift_headings_skips_code_fences():
    text = "# A\n```\n# not a heading\n```\n## B\n#hashtag"
    assert report._shift_headings(text, 2) == "### A\n```\n# not a heading\n```\n#### B\n#hashtag"


@pytest.mark.parametrize(
    "text, numbers",
    [("λ = 33.1 [30.2, 36.0]", [33.1, 30.2, 36.0]), ("barrier −0.5 and 1e-3, 2.5E+2", [-0.5, 1e-3, 250.0]),
     ("v1.2 model_3 and .5", [0.5]), ("none", [])],
)
def test_numbers_in(text, numbers):
    assert report.numbers_in(text) == numbers


_PNG = f"data:image/png;base64,{fx.tiny_png()}"
_OK_BODY = ('<h1 id="t">T</h1><nav class="report-toc"><h2 id="table-of-contents">Contents</h2>'
            '<ol><li><a href="#s">S</a></li></ol></nav><h2 id="s">S</h2>')


def _page(body: str = "", head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><title>T</title>{head}</head><body>{_OK_BODY}{body}</body></html>"


@pytest.mark.parametrize(
    "html, problem",
    [
        (_page(f'<img src="{_PNG}">'), None),
        (_page('<p id="s">again</p>'), "duplicate id 's'"),
        (_page('<a href="#nowhere">x</a>'), "in-page link '#nowhere'"),
        (_page().replace('href="#s"', 'href="#gone"'), "does not land on a heading"),
        (_page().replace("</ol>", '<li><a href="#s">S</a></li></ol>'), "links '#s' 2 times"),
        (_page().replace("Contents", "C").replace('id="table-of-contents"', ""), "no table of contents"),
        (_page(head='<script src="https://cdn.example/x.js"></script>'), "loads a resource from elsewhere"),
        (_page(head='<link rel="stylesheet" href="//fonts.example/css">'), "loads a resource from elsewhere"),
        (_page(head="<style>@import url(https://x/y.css);</style>"), "style sheet imports"),
        (_page('<script type="module">import("https://cdn/m.mjs")</script>'), "names an http(s) address"),
        (_page('<img src="figures/curve.png">'), "not embedded"),
        (_page('<img src="data:image/png;base64,AAAA">'), "not a PNG"),
        (_page('<img src="data:image/png;base64,">'), "empty image/png"),
        (_page('<img src="data:image/png;base64,@@">'), "does not decode"),
        (_page('<a href="figures/curve.png">fig</a>'), "link to a local file"),
        (_page('<div class="jp-CodeCell"><div class="jp-InputArea">x = 1</div></div>'), "code inputs are shown"),
        (_page("<pre>Traceback (most recent call last):\n  File</pre>"), "a traceback"),
        (_page("<p>An Exception was encountered at 'In [3]'.</p>"), "error banner"),
        (_page('<script type="application/vnd.jupyter.widget-state+json">{}</script>'), "widget"),
        (_page("<pre>  0%|          | 0/10</pre>"), "frozen at 0%"),
        (_page("<pre>\x1b[31mred</pre>"), "ANSI"),
        (_page('<div style="background:url(http://x/y.png)"></div>'), "loads a url()"),
        (_page().replace("<h1", "<h2").replace("</h1>", "</h2>"), "expected one <h1>"),
    ],
)
def test_check_report_html_cases(html, problem):
    problems = report.check_report_html(html)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems
