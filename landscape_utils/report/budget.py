"""The report's appendix on estimator noise: the seed/estimator decomposition as a table, and the
estimand it implies (see :mod:`landscape_utils.study.variance`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scipy import stats

from ..study.registry import label
from .tables import fmt, markdown_table

Rows = Sequence[Mapping[str, Any]]


def _ratio(row: Mapping[str, Any], source: str) -> str:
    r = row["ratio"].get(source)
    if r is None:
        return "—"
    return f"{r:.2f} {'✓' if row['passes'][source] else '✗'}"


def variance_table(rows: Rows) -> str:
    """One row per quantity: between-seed s.d. (n), estimator s.d. per source, each as a ratio to the
    between-seed s.d. (✓ within the rule, ✗ not), the seed's share of the between-seed variance and
    the verdict (every quantity measured; the full record)."""
    return markdown_table(
        ["quantity", "between-seed s.d. (n)", "estimator s.d., random vectors", "estimator s.d., probe set",
         "ratio, random vectors", "ratio, probe set", "seed share of variance", "verdict"],
        [[r["quantity"], f"{fmt(r['between_sd'])} ({r['n']})", fmt(r["estimator_sd"].get("random vectors")),
          fmt(r["estimator_sd"].get("probe set")), _ratio(r, "random vectors"), _ratio(r, "probe set"),
          "—" if r["seed_share"] is None else f"{100 * r['seed_share']:.0f}%", r["verdict"]] for r in rows])


def headline_quantities(names: Sequence[str]) -> list[str]:
    """The quantities the report's claims rest on, in the report's order: λmax, λmin, tr(H); E[ΔL] per
    noise kind at its largest σ and the write-up's E|ΔL| (isotropic, largest σ); slice curvatures
    vᵀHv per direction kind; straight-line barriers."""
    def largest(prefix: str) -> list[str]:
        found = [n for n in names if n.startswith(prefix)]
        return [max(found, key=lambda n: float(n.rsplit("σ=", 1)[1]))] if found else []

    out = [n for n in ("λmax", "λmin", "tr(H)") if n in names]
    for kind in ("isotropic", "filter", "magnitude"):
        out += largest(f"E[ΔL] {kind} σ=")
    out += largest("E|ΔL| isotropic σ=")
    out += [n for n in names if n.startswith("slice curvature vᵀHv")]
    out += [n for n in names if n.endswith("barrier (test), straight")]
    return out


def _cell(row: Mapping[str, Any] | None) -> str:
    if row is None or row["between_sd"] in (None, 0):
        return "—"
    parts = [f"{row['ratio'][src]:.2f}{'' if row['passes'][src] else '✗'}" if row["ratio"].get(src) is not None else "—"
             for src in ("random vectors", "probe set")]
    return " / ".join(parts)


def needed_multiplier(row: Mapping[str, Any] | None, source: str = "random vectors") -> float | None:
    """How many times the budget of ``source`` (probes, draws, directions; or S's size) would have to
    grow for the rule to hold: (ratio / rule)², standard errors shrinking as 1/√budget."""
    if row is None or row["ratio"].get(source) is None:
        return None
    return max(1.0, (row["ratio"][source] / row.get("rule", 0.25)) ** 2)


def compact_table(rows_by_arch: Mapping[str, Rows]) -> str:
    """The appendix table: headline quantities × architectures, each cell "random vectors / probe set"
    ratio of estimator s.d. to between-seed s.d. (✗ above the rule), then the budget growth the worst
    architecture's random-vector noise would need."""
    by_arch = {a: {r["quantity"]: r for r in rs} for a, rs in rows_by_arch.items()}
    names = list(dict.fromkeys(n for rs in by_arch.values() for n in rs))
    rows = []
    for name in headline_quantities(names):
        need = [m for a in by_arch if (m := needed_multiplier(by_arch[a].get(name))) is not None]
        rows.append([name, *[_cell(by_arch[a].get(name)) for a in by_arch],
                     "—" if not need else ("within the rule" if max(need) <= 1 else f"×{max(need):.0f}")])
    return markdown_table(["quantity", *[f"{label(a)}: ratio, random vectors / probe set" for a in by_arch],
                           "budget growth for the rule (random vectors, worst model)"], rows)


def _failing(rows: Rows, source: str) -> list[str]:
    # Only the headline quantities are named (the full list is in the results files).
    keep = set(headline_quantities([r["quantity"] for r in rows]))
    return [f"{r['quantity']} ({r['ratio'][source]:.2f})" for r in rows
            if r["quantity"] in keep and r["passes"].get(source) is False]


def _sd_factor(repeats: int, level: float = 0.95) -> tuple[float, float]:
    # A s.d. from n repeats has n − 1 degrees of freedom: the true s.d. lies within these factors of it.
    dof = repeats - 1
    return (dof / stats.chi2.ppf(1 - (1 - level) / 2, dof)) ** 0.5, (dof / stats.chi2.ppf((1 - level) / 2, dof)) ** 0.5


def estimand_text(rows: Rows | Mapping[str, Rows], cfg) -> str:
    """The estimand (quantities on the fixed probe sets S, not on the data distribution), the rule,
    and which quantities' estimator noise breaks it — computed from ``rows``
    (:func:`~landscape_utils.study.variance.decomposition`; a list, or ``{arch: rows}``)."""
    by_arch = dict(rows) if isinstance(rows, Mapping) else {None: rows}
    rule = next((r["rule"] for rs in by_arch.values() for r in rs), 0.25)
    low, high = _sd_factor(cfg.variance_repeats)
    text = (f"**Estimand.** Every curvature, flatness, slice and barrier quantity is measured on fixed probe "
            f"sets S: {cfg.probe_train_size:,} training examples (and {cfg.probe_test_size:,} test examples for "
            f"test-split quantities), drawn once with probe_seed = {cfg.probe_seed} and the same for every seed. The "
            "quantities are properties of the loss *on S*: S's sampling error is common to all seeds, an offset that "
            "more seeds do not remove, so an interval over seeds covers the mean over seeds on S, not on the data "
            f"distribution. **Rule:** an estimator's standard error (its s.d. over {cfg.variance_repeats} repeats on "
            f"one run with independent randomness) should be at most {rule:g} × the between-seed s.d. With "
            f"{cfg.variance_repeats - 1} degrees of freedom a repeat s.d. is known only to within a factor "
            f"{low:.2f}–{high:.2f} (95%), so ratios near the rule are not decided by these repeats.")
    for arch, rs in by_arch.items():
        who = f"{label(arch)}: " if arch is not None else ""
        probe, rv = _failing(rs, "probe set"), _failing(rs, "random vectors")
        if probe:
            said = (f"probe-set noise exceeds the rule for {', '.join(probe)}: these are stated *on S*; read as "
                    "properties of the data distribution they would need a larger S.")
        else:
            said = ("probe-set noise is within the rule for every quantity: S's error is small next to the seed "
                    "spread, so reading them as properties of the data distribution changes little.")
        text += "\n\n" + (who + said if who else said[0].upper() + said[1:])
        if rv:
            text += (f" Random-vector noise exceeds the rule for {', '.join(rv)}: it is drawn afresh for every "
                     "seed, so it inflates the between-seed spread; more probes or draws would narrow the intervals.")
        else:
            text += " Random-vector noise is within the rule for every quantity."
    return text
