"""Build the study's single-file HTML report from the executed notebooks.

Layout of the inputs (written by the workflow's notebook jobs; sections and architectures come
from :mod:`landscape_utils.study.registry`, in its order)::

    <study_dir>/settings.json
    <study_dir>/executed/<arch>/<section>.ipynb       one per section and architecture
    <study_dir>/executed/comparison.ipynb             the cross-architecture notebook

Layout of the report (one self-contained HTML file: images as data URIs, math as MathML, no
code by default, no external script, style sheet or font, so it works offline):

    title (the summary notebook's leading ``#`` heading), a line naming the study and every
    setting that differs from the study's defaults, contents
    introduction            summary cells tagged ``section:intro``
    one section per probe   its heading (the probe notebook's leading ``#`` heading),
                            the ``method`` cells of the first architecture's notebook,
                            "Results: <arch>" with each architecture's other cells,
                            the summary cells tagged ``section:<key>``
    conclusion              summary cells tagged ``section:conclusion``
    appendix                summary cells tagged ``section:appendix`` (e.g. estimator noise)

Headings inside notebooks are shifted so the outline nests; every heading gets a unique id and
the table of contents links to those ids. Executed notebooks that failed are refused, as are
missing ones. Parameter cells, cells tagged ``remove``/``hide``, widget outputs and empty cells
are left out, and so is stderr (progress bars, warnings); stdout loses ANSI codes and keeps only
the last state of ``\\r``-rewritten lines.

nbformat/nbconvert/bs4 are imported inside functions: they cost seconds at import.
Command line: ``python -m landscape_utils report --profile smoke`` (see ``python -m landscape_utils -h``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import mimetypes
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

def _sections() -> dict[str, Any]:
    from ..study.registry import SECTIONS

    return SECTIONS


def _section_keys() -> tuple[str, ...]:
    return ("intro", *_sections(), "conclusion", "appendix")


#: Cells with one of these tags never reach the report.
DROP_TAGS = frozenset({"parameters", "injected-parameters", "remove", "hide", "remove-cell",
                       "hide-cell", "papermill-error-cell-tag"})
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
TOC_ID = "table-of-contents"
_TOC_PLACEHOLDER = '<div id="report-toc-placeholder"></div>'

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_HEADING = re.compile(r"^(#{1,6})([ \t]+.*|)$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_MD_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)")
_HTML_IMG = re.compile(r"(<img\b[^>]*?\bsrc=[\"'])([^\"']+)", re.I)
_MATH = re.compile(
    r"\$\$(?P<d1>.+?)\$\$|\\\[(?P<d2>.+?)\\\]|(?P<env>\\begin\{(?P<name>[a-z*]+)\}.+?\\end\{(?P=name)\})"
    r"|\\\((?P<i1>.+?)\\\)|(?<![\\$\w])\$(?!\s)(?P<i2>[^$\n]+?)(?<![\s\\])\$(?![\w$])", re.S)
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+−]?\d+)?")


class ReportError(RuntimeError):
    """The report cannot be built; the message says which notebook and what to do."""


class NotebookMissingError(ReportError):
    """An executed notebook the report needs does not exist."""


class NotebookFailedError(ReportError):
    """An executed notebook records a failed (or incomplete) execution."""


class ReportCheckError(ReportError):
    """The assembled HTML failed :func:`check_report_html`."""


# --------------------------------------------------------------------------- inputs


def executed_path(study_dir: Path, section: str | None = None, arch: str | None = None) -> Path:
    """Where the workflow writes the executed notebook of ``section`` for ``arch`` (the
    comparison notebook when ``section`` is None)."""
    base = Path(study_dir) / "executed"
    return base / "comparison.ipynb" if section is None else base / arch / f"{section}.ipynb"


def _make_hint(study_dir: Path) -> str:
    target = {"smoke": "make smoke", "full": "make report"}.get(Path(study_dir).name)
    return f"`{target}` produces them" if target else "run this study's workflow first (make report SET=...)"


def load_executed(path: Path, hint: str = "") -> Any:
    """Read an executed notebook and refuse it unless its execution completed.

    Raises:
        NotebookMissingError: the file does not exist (``hint`` says how to produce it).
        NotebookFailedError: see :func:`check_executed`.
    """
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise NotebookMissingError(f"missing executed notebook {path}" + (f": {hint}" if hint else ""))
    nb = nbformat.read(path, as_version=4)
    check_executed(nb, path)
    return nb


def _first_line(source: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip()]
    return lines[0].strip()[:100] if lines else "<empty cell>"


def check_executed(nb: Any, path: Path | str) -> None:
    """Raise :class:`NotebookFailedError` if ``nb`` records a failed or incomplete execution.

    Refused: an ``error`` output (except ``SystemExit(0)``, as papermill does), a traceback in a
    stream, a cell papermill marked ``exception``, ``metadata.papermill.exception`` without any of
    these, and a non-empty code cell that was never executed. The message names the file, the
    cell (index in the executed notebook, ``In [n]``, first source line) and the exception.
    """
    def fail(i: int, cell: Any, what: str) -> None:
        count = cell.get("execution_count")
        raise NotebookFailedError(
            f"{path}: execution failed in cell {i} (In [{count if count is not None else ' '}]), "
            f"which starts {_first_line(cell.source)!r}: {what}. Fix it and re-run the notebook; "
            "a failed run is never put in the report.")

    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error" and not (out.ename == "SystemExit" and out.evalue in ("", "0")):
                fail(i, cell, f"{out.ename}: {_ANSI.sub('', str(out.evalue))}")
            if out.output_type == "stream" and "Traceback (most recent call last)" in out.text:
                last = [ln for ln in _ANSI.sub("", out.text).splitlines() if ln.strip()][-1]
                fail(i, cell, f"traceback in {out.name}: {last.strip()}")
        if cell.metadata.get("papermill", {}).get("exception") is True:
            fail(i, cell, "papermill marked this cell as failed")
    if nb.metadata.get("papermill", {}).get("exception"):
        raise NotebookFailedError(f"{path}: papermill recorded an exception (metadata.papermill.exception)")
    for i, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and cell.source.strip() and cell.get("execution_count") is None \
                and "parameters" not in tags:  # checks cells are left out of the report, never unrun
            raise NotebookFailedError(
                f"{path}: cell {i}, which starts {_first_line(cell.source)!r}, was never executed; "
                "the report needs a complete run")


# --------------------------------------------------------------------------- cell cleaning


def clean_stream_text(text: str) -> str:
    """Strip ANSI codes and keep, for each line, what a terminal shows after its last ``\\r``."""
    lines = []
    for line in _ANSI.sub("", text).split("\n"):
        parts = [p for p in line.split("\r") if p.strip()]
        lines.append(parts[-1] if parts else "")
    return "\n".join(lines)


def _clean_outputs(outputs: list) -> list:
    cleaned: list = []
    for out in outputs:
        out = copy.deepcopy(out)
        if out.output_type == "stream" and out.name == "stderr":
            continue  # progress bars and warnings are for the person running the notebook
        if out.output_type == "stream":
            # Merge consecutive chunks of one stream so that \r rewrites spanning chunks collapse.
            if cleaned and cleaned[-1].output_type == "stream" and cleaned[-1].name == out.name:
                cleaned[-1].text += out.text
                continue
            cleaned.append(out)
        elif out.output_type in ("display_data", "execute_result"):
            # A widget (e.g. tqdm.auto's bar) renders frozen at its first state in static HTML,
            # and its text/plain is only "HBox(...)": drop the whole output.
            if any(m in out.data for m in WIDGET_MIMES):
                continue
            if "text/plain" in out.data:
                out.data["text/plain"] = _ANSI.sub("", out.data["text/plain"])
            if "image/svg+xml" in out.data and ({"image/png", "image/jpeg"} & set(out.data)):
                # One figure in two formats: keep the raster form (smaller, no inline-SVG ids).
                del out.data["image/svg+xml"]
            cleaned.append(out)
        # error outputs left here are SystemExit(0) (check_executed refused the others)
    for out in cleaned:
        if out.output_type == "stream":
            out.text = clean_stream_text(out.text)
    return [o for o in cleaned if o.output_type != "stream" or o.text.strip()]


def _embed_local_images(source: str, dirs: Sequence[Path], where: str) -> str:
    """Replace local image paths in markdown/HTML by data URIs (looked up in ``dirs``)."""
    def embed(m: re.Match) -> str:
        src = m.group(2)
        if re.match(r"^(data:|attachment:|https?:|//)", src):
            return m.group(0)
        for d in dirs:
            p = (d / src).resolve()
            if p.is_file():
                mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
                return m.group(1) + f"data:{mime};base64," + base64.b64encode(p.read_bytes()).decode()
        raise ReportError(f"{where}: image {src!r} not found (looked in {', '.join(map(str, dirs))})")
    return _HTML_IMG.sub(embed, _MD_IMAGE.sub(embed, source))


def _heading_lines(text: str):
    """Yield (line index, level) of ATX headings outside fenced code."""
    fence = None
    for i, line in enumerate(text.split("\n")):
        m = _FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        h = _HEADING.match(line)
        if h and fence is None:
            yield i, len(h.group(1))


def _shift_headings(text: str, shift: int) -> str:
    lines = text.split("\n")
    for i, level in _heading_lines(text):
        new = min(6, max(1, level + shift))
        lines[i] = "#" * new + lines[i][level:]
    return "\n".join(lines)


def _markdown_texts(cell: Any) -> list[tuple[Any, str]]:
    """(container, key) pairs holding markdown in a cell: its source, or text/markdown outputs."""
    if cell.cell_type == "markdown":
        return [(cell, "source")]
    return [(o.data, "text/markdown") for o in cell.get("outputs", [])
            if o.output_type in ("display_data", "execute_result") and "text/markdown" in o.data]


def _starts_with_heading(cells: list) -> bool:
    """True when the first non-blank line of the first cell's markdown is a heading."""
    texts = _markdown_texts(cells[0]) if cells else []
    if not texts:
        return False
    text = texts[0][0][texts[0][1]]
    first = next((j for j, ln in enumerate(text.split("\n")) if ln.strip()), -1)
    return any(i == first for i, _ in _heading_lines(text))


def _demote(cells: list, top: int) -> list:
    """Shift all headings in ``cells`` by one amount so the shallowest sits at level ``top``."""
    levels = [lv for c in cells for obj, key in _markdown_texts(c) for _, lv in _heading_lines(obj[key])]
    if levels:
        shift = top - min(levels)
        for c in cells:
            for obj, key in _markdown_texts(c):
                obj[key] = _shift_headings(obj[key], shift)
    return cells


def _pop_title(nb: Any) -> str | None:
    """Remove and return the notebook's title: a level-1 heading opening its first cell."""
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        return None
    lines = nb.cells[0].source.split("\n")
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None or not re.match(r"^#[ \t]+\S", lines[first]):
        return None
    title = lines[first].lstrip("#").strip().rstrip("#").strip()
    rest = "\n".join(lines[first + 1:]).strip()
    if rest:
        nb.cells[0].source = rest
    else:
        del nb.cells[0]
    return title


def _report_cells(nb: Any, path: Path, include_code: bool) -> list:
    """Cells of an executed notebook that belong in the report, cleaned (copies)."""
    dirs = [path.parent]
    src = nb.metadata.get("papermill", {}).get("input_path")
    if src:
        dirs.append(Path(src).parent)
    dirs.append(Path.cwd())
    out = []
    for i, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if tags & DROP_TAGS or cell.cell_type == "raw":
            continue
        cell = copy.deepcopy(cell)
        if cell.cell_type == "markdown":
            cell.source = _embed_local_images(cell.source, dirs, f"{path} cell {i}")
            if not cell.source.strip():
                continue
        else:
            cell.outputs = [] if tags & {"remove-output", "hide-output"} else _clean_outputs(cell.outputs)
            if not cell.outputs and not (include_code and cell.source.strip()):
                continue
        out.append(cell)
    return out


# --------------------------------------------------------------------------- assembly


def settings_header(study_dir: Path) -> str:
    """Markdown: the study's profile and every setting that differs from the study's defaults.

    Raises:
        ReportError: no ``settings.json`` in ``study_dir``.
    """
    import json

    path = Path(study_dir) / "settings.json"
    if not path.is_file():
        raise ReportError(f"{path} is missing: the report names the settings it was made with")
    record = json.loads(path.read_text())
    diff = record.get("differs_from_defaults", {})
    if not diff:
        return f"*Profile* `{record['profile']}` · every setting is the study's default."
    items = "; ".join(f"`{k}` = {json.dumps(v)}" for k, v in diff.items())
    return f"*Profile* `{record['profile']}` · settings that differ from the study's defaults: {items}."


def _md(text: str) -> Any:
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


def _tags(cell: Any) -> set:
    return set(cell.metadata.get("tags", []))


def assemble_notebook(study_dir: Path, archs: Sequence[str], include_code: bool = False) -> Any:
    """Merge the executed notebooks into one report notebook (see the module docstring).

    Args:
        study_dir: e.g. ``outputs/smoke`` (holds ``settings.json`` and ``executed/``).
        archs: architectures in report order; the first one's ``method`` cells are shown.
        include_code: keep code cells that have no output (for a report with code).

    Returns:
        An nbformat v4 notebook whose cells all have unique ids; ``metadata.title`` is set.

    Raises:
        NotebookMissingError, NotebookFailedError: see :func:`load_executed`.
        ReportError: no architectures, a summary cell without a known ``section:<key>`` tag,
            or a local image that cannot be found.
    """
    import nbformat

    study_dir = Path(study_dir)
    archs = list(archs)
    if not archs:
        raise ReportError("no architectures given")
    if len(set(archs)) != len(archs):
        raise ReportError(f"architectures repeat: {archs}")
    hint = _make_hint(study_dir)
    sections = _sections()
    section_keys = _section_keys()
    # Load everything first and report every missing or failed notebook at once, not one per run.
    summary_path = executed_path(study_dir)
    paths = {("summary", None): summary_path}
    paths.update({(key, arch): executed_path(study_dir, key, arch) for key in sections for arch in archs})
    loaded, errors = {}, []
    for k, path in paths.items():
        try:
            loaded[k] = load_executed(path)
        except ReportError as exc:
            errors.append(exc)
    if errors:
        failed = [e for e in errors if isinstance(e, NotebookFailedError)]
        if failed:
            raise NotebookFailedError("\n".join(map(str, failed)) + (
                f"\n(and {len(errors) - len(failed)} executed notebook(s) missing)" if len(failed) < len(errors) else ""))
        raise NotebookMissingError(f"{len(errors)} executed notebook(s) missing ({hint}):\n"
                                   + "\n".join(str(e) for e in errors))
    summary = loaded[("summary", None)]
    probes = {k: (nb, paths[k]) for k, nb in loaded.items() if k[0] != "summary"}

    title = _pop_title(summary) or "Loss-landscape geometry on MNIST"
    by_key: dict[str, list] = {k: [] for k in section_keys}
    for cell in _report_cells(summary, summary_path, include_code):
        keys = [t.split(":", 1)[1] for t in _tags(cell) if t.startswith("section:")]
        if not keys and cell.cell_type == "code" and not cell.outputs:
            continue  # untagged setup code (shown only with include_code) has no section to go in
        if len(keys) != 1 or keys[0] not in by_key:
            raise ReportError(
                f"{summary_path}: cell {_first_line(cell.source)!r} needs exactly one tag section:<key> "
                f"with key in {', '.join(section_keys)} (or the tag 'remove'), has {sorted(_tags(cell))}")
        by_key[keys[0]].append(cell)

    from ..study.registry import label

    labels = ", ".join(label(a) for a in archs)
    when = summary.metadata.get("papermill", {}).get("end_time", "")[:10]
    cells = [
        _md(f"# {title}"),
        _md(f"*Study* `{study_dir.name}` · *architectures* {labels}" + (f" · *executed* {when}" if when else "")
            + "\n\n" + settings_header(study_dir)),
        _md(_TOC_PLACEHOLDER),
    ]

    def block(body: list, top: int, default_heading: str | None) -> list:
        if body and (_starts_with_heading(body) or default_heading is None):
            return _demote(body, top)
        head = [_md(f"{'#' * top} {default_heading}")] if default_heading else []
        return head + _demote(body, top + 1)

    cells += block(by_key["intro"], 2, "Introduction") if by_key["intro"] else []
    for key in sections:
        section_title = None
        per_arch = {}
        for arch in archs:
            nb, path = probes[(key, arch)]
            t = _pop_title(nb)
            section_title = section_title or t
            per_arch[arch] = _report_cells(nb, path, include_code)
        method = [c for c in per_arch[archs[0]] if "method" in _tags(c)]
        cells.append(_md(f"## {section_title or sections[key].title}"))
        cells += _demote(method, 3)
        for arch in archs:
            cells.append(_md(f"### Results: {label(arch)}"))
            cells += _demote([c for c in per_arch[arch] if "method" not in _tags(c)], 4)
        if by_key[key]:
            cells += block(by_key[key], 3, "Comparison across architectures")
    if by_key["conclusion"]:
        cells += block(by_key["conclusion"], 2, "Conclusion")
    if by_key["appendix"]:
        cells += block(by_key["appendix"], 2, "Appendix")

    for i, cell in enumerate(cells):
        cell.id = f"report-cell-{i:04d}"  # unique, stable, valid nbformat 4.5 ids
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    meta = {k: summary.metadata[k] for k in ("kernelspec", "language_info") if k in summary.metadata}
    meta["title"] = title  # no "widgets" key: widget state is never carried over
    return nbformat.v4.new_notebook(cells=cells, metadata=meta)


# --------------------------------------------------------------------------- HTML


def export_html(nb: Any, include_code: bool = False) -> str:
    """Render a report notebook to self-contained HTML (nbconvert's lab template, post-processed).

    nbconvert's template links require.js, MathJax and mermaid from a CDN; those scripts are
    removed, math is rendered to MathML (Chromium and Firefox show it natively) and headings get
    unique ids plus a table of contents (see :func:`postprocess_html`).
    """
    from nbconvert import HTMLExporter

    from traitlets.config import Config

    no_code = not include_code
    # Cells tagged remove-input/hide-input keep their outputs but never show code.
    config = Config({"TagRemovePreprocessor": {"enabled": True,
                                               "remove_input_tags": ["remove-input", "hide-input"]}})
    exporter = HTMLExporter(
        config=config, template_name="lab", exclude_input=no_code, exclude_input_prompt=no_code,
        exclude_output_prompt=no_code, embed_images=False, mathjax_url="", require_js_url="",
        mermaid_js_url="", mermaid_layout_elk_js_url="")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata.get("title", "Report")}})
    return postprocess_html(body)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-") or "section"


def _heading_text(h: Any) -> str:
    """A heading's text without its ¶ anchor link (MathML tokens join without spaces)."""
    text = "".join(s for s in h.find_all(string=True) if not s.find_parent("a", class_="anchor-link"))
    return re.sub(r"\s+", " ", text).strip()


def _math_to_mathml(soup: Any) -> None:
    from bs4 import BeautifulSoup, NavigableString

    try:
        from latex2mathml.converter import convert
    except ImportError:  # only needed when there is math
        convert = None
    for box in soup.select(".jp-RenderedMarkdown"):
        for node in list(box.find_all(string=True)):
            if node.find_parent(["code", "pre", "script", "style", "math"]) or not _MATH.search(node):
                continue
            if convert is None:
                raise ReportError("the report has math ($...$) and needs the package latex2mathml "
                                  "to render it offline: pip install latex2mathml")
            pieces, pos = [], 0
            for m in _MATH.finditer(node):
                pieces.append(NavigableString(node[pos:m.start()]))
                tex = m.group("d1") or m.group("d2") or m.group("env") or m.group("i1") or m.group("i2")
                display = "inline" if (m.group("i1") or m.group("i2")) else "block"
                try:
                    math = BeautifulSoup(convert(tex.strip(), display=display), "html.parser")
                    pieces.append(math)
                except Exception:  # noqa: BLE001 - unsupported TeX stays readable as source
                    pieces.append(NavigableString(m.group(0)))
                pos = m.end()
            pieces.append(NavigableString(node[pos:]))
            for piece in pieces:
                node.insert_before(piece)
            node.extract()


def postprocess_html(html: str) -> str:
    """Make nbconvert's HTML self-contained and give it a unique outline.

    Removes every ``<script>`` that loads from elsewhere (or configures what did), turns TeX in
    markdown into MathML, assigns every heading a unique id built from its section path
    (``curvature-results-mlp-setup``), points anchor links and in-page links at the new ids and
    replaces the placeholder with a table of contents of the level-2 and level-3 headings.
    """
    from bs4 import BeautifulSoup

    from bs4 import Comment

    soup = BeautifulSoup(html, "html.parser")
    for c in soup.find_all(string=lambda t: isinstance(t, Comment)):
        c.extract()  # the template's comments name the CDN scripts removed below
    for s in soup.find_all("script"):
        text = s.string or ""
        if s.has_attr("src") or "http" in text or "mathjax" in (s.get("type") or "").lower() \
                or "widget" in (s.get("type") or "") or "MathJax" in text:
            s.decompose()
    _math_to_mathml(soup)
    # Inline SVG figures repeat element ids (matplotlib's "patch_1", clip paths): isolate each one
    # in an <img> data URI so ids stay unique and the figure still scales.
    for box in soup.select('[data-mime-type="image/svg+xml"]'):
        svg = box.find("svg")
        if svg is not None:
            uri = "data:image/svg+xml;base64," + base64.b64encode(str(svg).encode()).decode()
            svg.replace_with(soup.new_tag("img", src=uri, alt="figure"))

    headings = soup.find_all(re.compile(r"^h[1-6]$"))
    used = {el["id"] for el in soup.find_all(id=True) if el not in headings} | {TOC_ID}
    old_ids: dict[str, list[tuple[int, str]]] = {}
    path: dict[int, str] = {}
    section = -1
    for h in headings:
        level, text = int(h.name[1]), _heading_text(h)
        section += level <= 2
        path = {k: v for k, v in path.items() if k < level}
        path[level] = _slug(text)
        parts = [path[k] for k in sorted(path) if k >= 2]
        # "curvature" + "curvature-across-architectures": keep only the longer, more specific part
        parts = [p for i, p in enumerate(parts) if i + 1 == len(parts) or not parts[i + 1].startswith(p)]
        base = "title" if level == 1 else "-".join(parts)
        new, k = base, 2
        while new in used:
            new, k = f"{base}-{k}", k + 1
        used.add(new)
        if h.get("id"):
            old_ids.setdefault(h["id"], []).append((section, new))
        h["id"] = new
        for a in h.find_all("a", class_="anchor-link"):
            a["href"] = f"#{new}"
    # In-page links written against nbconvert's text-derived ids: prefer a target in the same section.
    section = -1
    for el in soup.find_all(True):
        if el in headings:
            section += int(el.name[1]) <= 2
        elif el.name == "a" and el.get("href", "").startswith("#") and el["href"][1:] not in used:
            cands = old_ids.get(el["href"][1:], [])
            same = [n for s, n in cands if s == section]
            if same or cands:
                el["href"] = f"#{(same or [cands[0][1]])[0]}"

    placeholder = soup.find(id="report-toc-placeholder")
    if placeholder is not None:
        nav = soup.new_tag("nav", attrs={"class": "report-toc", "aria-label": "Table of contents"})
        title = soup.new_tag("h2", id=TOC_ID)
        title.string = "Contents"
        nav.append(title)
        top = soup.new_tag("ol")
        nav.append(top)
        sub = None
        for h in headings:
            if h.name not in ("h2", "h3"):
                continue
            li = soup.new_tag("li")
            a = soup.new_tag("a", href=f"#{h['id']}")
            for child in h.contents:  # keep inline markup (code, emphasis, MathML) in the entry
                if not (getattr(child, "name", None) == "a" and "anchor-link" in child.get("class", [])):
                    a.append(copy.copy(child))
            li.append(a)
            if h.name == "h2" or sub is None and not top.contents:
                top.append(li)
                sub = None
            else:
                if sub is None:
                    sub = soup.new_tag("ol")
                    top.contents[-1].append(sub)
                sub.append(li)
        placeholder.replace_with(nav)
    style = soup.new_tag("style")
    style.string = (
        "main{max-width:64rem;margin:0 auto;padding:0 1.5rem 4rem}"
        "nav.report-toc{border:1px solid #ddd;border-radius:4px;padding:.5rem 1.5rem;margin:1rem 0}"
        "nav.report-toc ol{margin:.2rem 0;list-style:decimal}nav.report-toc li{margin:.1rem 0}"
        "math[display=block]{margin:.6em 0}")
    (soup.head or soup).append(style)
    return str(soup)


# --------------------------------------------------------------------------- checks

_RESOURCE_ATTRS = {"script": ["src"], "link": ["href"], "img": ["src", "srcset"], "iframe": ["src"],
                   "source": ["src", "srcset"], "video": ["src", "poster"], "audio": ["src"],
                   "embed": ["src"], "object": ["data"], "track": ["src"], "input": ["src"],
                   "image": ["href", "xlink:href"], "use": ["href", "xlink:href"]}
_BLOCKS = ["p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "tr", "td", "th", "br", "nav",
           "ol", "ul", "table", "section", "blockquote", "figure", "figcaption", "img", "hr", "dt", "dd"]
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _image_problem(src: str) -> str | None:
    m = re.match(r"^data:(image/[\w.+-]+);base64,(.*)$", src, re.S)
    if not m:
        return f"image not embedded as a base64 data URI: {src[:80]!r}"
    try:
        data = base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError):
        return f"image data URI ({m.group(1)}) does not decode as base64"
    if not data:
        return f"empty {m.group(1)} image"
    if m.group(1) == "image/png":
        if not data.startswith(_PNG_SIG) or len(data) < 24:
            return "image/png data is not a PNG"
        if int.from_bytes(data[16:20], "big") == 0 or int.from_bytes(data[20:24], "big") == 0:
            return "PNG image with zero width or height"
    if m.group(1) == "image/jpeg" and not data.startswith(b"\xff\xd8"):
        return "image/jpeg data is not a JPEG"
    return None


def check_report_html(html: str, include_code: bool = False) -> list[str]:
    """Problems that make a report unfit to ship; an empty list means none were found.

    Checked: a title and one ``h1``; unique ids; a table of contents whose links are distinct and
    each land on exactly one heading; every in-page ``#`` link resolves; no code inputs (unless
    ``include_code``); no tracebacks, error outputs or papermill error banners; no resource loaded
    from elsewhere (``src``/``href`` of scripts, style sheets, images, frames..., CSS ``url()``
    and ``@import``, script text naming http); every image a decodable data URI (PNGs with a
    non-zero size); no links to local files; no widget data; no ANSI codes; no progress bar
    frozen at 0%.
    """
    from collections import Counter

    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    problems: list[str] = []
    if not (soup.title and soup.title.get_text(strip=True)):
        problems.append("no <title>")
    if len(soup.find_all("h1")) != 1:
        problems.append(f"expected one <h1>, found {len(soup.find_all('h1'))}")
    ids = Counter(el["id"] for el in soup.find_all(id=True))
    problems += [f"duplicate id {i!r} ({n} times)" for i, n in ids.items() if n > 1]
    toc_head = soup.find(id=TOC_ID)
    nav = toc_head.find_parent("nav") if toc_head else None
    toc_links = [a["href"] for a in nav.find_all("a", href=True)] if nav else []
    if not toc_links:
        problems.append("no table of contents (or an empty one)")
    for href, n in Counter(toc_links).items():
        if n > 1:
            problems.append(f"table of contents links {href!r} {n} times")
        target = soup.find(id=href[1:]) if href.startswith("#") else None
        if target is None or not re.match(r"^h[1-6]$", target.name):
            problems.append(f"table-of-contents link {href!r} does not land on a heading")
    for a in soup.find_all("a", href=True):
        href = a["href"]
        if href.startswith("#") and ids.get(href[1:], 0) != 1:
            problems.append(f"in-page link {href!r} ({a.get_text(strip=True)[:40]!r}) has no unique target")
        elif not re.match(r"^(#|https?:|mailto:|data:)", href):
            problems.append(f"link to a local file {href!r}: broken once the report is moved")
    if not include_code and soup.select(".jp-CodeCell .jp-InputArea, .jp-CodeMirrorEditor, .input_area"):
        problems.append("code inputs are shown")
    text = html_text(html)
    for pat, what in [("Traceback (most recent call last)", "a traceback"),
                      ("An Exception was encountered at", "papermill's error banner"),
                      ("encountered an exception here and stopped", "papermill's error marker")]:
        if pat in text:
            problems.append(f"the report shows {what}")
    if soup.select('[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg, .jp-OutputArea-output.jp-mod-error'):
        problems.append("the report shows an error output")
    for tag, attrs in _RESOURCE_ATTRS.items():
        for el in soup.find_all(tag):
            for attr in attrs:
                val = (el.get(attr) or "").strip()
                if val and not val.startswith(("data:", "#")):
                    problems.append(f"<{tag} {attr}={val[:80]!r}> loads a resource from elsewhere")
    for el in soup.find_all(["style", "script"]):
        body = el.string or ""
        if el.name == "style" and re.search(r"@import|url\(\s*['\"]?(?!data:|#)", body):
            problems.append("a style sheet imports or loads a url() from elsewhere")
        if el.name == "script" and re.search(r"https?://", body):
            problems.append("a script names an http(s) address")
    for el in soup.find_all(style=re.compile(r"url\(\s*['\"]?(?!data:|#)")):
        problems.append(f"<{el.name} style=...> loads a url() from elsewhere")
    for img in soup.find_all("img"):
        issue = _image_problem(img.get("src", ""))
        if issue:
            problems.append(issue)
    if "application/vnd.jupyter.widget" in html:
        problems.append("widget data or views are embedded")
    if "\x1b[" in text:
        problems.append("ANSI escape codes in the text")
    if re.search(r"(?<![\d.])0%\|", text):
        problems.append("a progress bar frozen at 0%")
    return problems


def html_text(html: str) -> str:
    """The text a reader sees in the report's body (no scripts or styles), whitespace collapsed."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for el in soup(["script", "style", "head", "template"]):
        el.decompose()
    for el in soup.select("a.anchor-link"):
        el.decompose()
    for el in soup.find_all("math"):  # MathML tokens (m, a, x of "max") read as one word
        el.replace_with(el.get_text(""))
    # Separate blocks and cells, but not inline spans (syntax highlighting splits "print(x)").
    for el in soup.find_all(_BLOCKS):
        el.insert_before(" ")
        el.insert_after(" ")
    return re.sub(r"\s+", " ", soup.get_text("")).strip()


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text`` (plain, decimal or scientific; ``−`` counts as minus)."""
    return [float(m.replace("−", "-")) for m in _NUMBER.findall(text)]


def report_outline(html: str) -> list[tuple[int, str, str]]:
    """(level, id, text) of every heading in document order."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    return [(int(h.name[1]), h.get("id", ""), _heading_text(h))
            for h in soup.find_all(re.compile(r"^h[1-6]$"))]


# --------------------------------------------------------------------------- build + CLI


def build_report(study_dir: Path, out_html: Path, archs: Sequence[str] | None = None,
                 include_code: bool = False) -> Path:
    """Assemble, render and check the report; write it to ``out_html`` only if it passes.

    Args:
        study_dir: e.g. ``outputs/smoke``, holding ``settings.json``,
            ``executed/<arch>/<section>.ipynb`` and ``executed/comparison.ipynb``.
        out_html: where to write the report (parents are created; replaced atomically).
        archs: architectures in report order (default: every registered one).
        include_code: show code inputs (default: outputs and text only).

    Returns:
        ``out_html``.

    Raises:
        NotebookMissingError, NotebookFailedError, ReportError: see :func:`assemble_notebook`.
        ReportCheckError: the HTML failed :func:`check_report_html`; the rejected HTML is kept
            beside ``out_html`` as ``*.rejected.html`` for inspection.
    """
    from ..study.registry import ARCHITECTURES

    out_html = Path(out_html)
    nb = assemble_notebook(Path(study_dir), list(archs or ARCHITECTURES), include_code)
    html = export_html(nb, include_code)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    problems = check_report_html(html, include_code)
    if problems:
        rejected = out_html.with_suffix(".rejected.html")
        rejected.write_text(html, encoding="utf-8")
        raise ReportCheckError(f"report failed its checks (HTML kept in {rejected}):\n- " + "\n- ".join(problems))
    tmp = out_html.with_name(f".{out_html.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out_html)
    return out_html
