"""Standard error of the mean loss change E[ΔL]: plain draws against antithetic ±δ pairs at the
same number of loss evaluations, on the full study's trained runs (every architecture, seed,
noise kind and σ of the study's settings). Writes outputs/bench/flatness_antithetic.json.

    LANDSCAPE_DATA=... OMP_NUM_THREADS=1 python benchmarks/bench_flatness_antithetic.py [--profile full]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from landscape_utils.probes.flatness import perturbation_loss_changes
from landscape_utils.study.jobs import LOSS, NOISE_KINDS, probe_data
from landscape_utils.study.registry import ARCHITECTURES
from landscape_utils.study.settings import open_study
from landscape_utils.study.training import train_or_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="full")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = open_study(args.profile).config
    probe = probe_data(cfg)
    rows = []
    for arch in ARCHITECTURES:
        for seed in cfg.seeds:
            model = train_or_load(cfg.train_config(arch, seed), progress=False).model()
            for i, kind in enumerate(NOISE_KINDS):
                sigmas = cfg.isotropic_sigmas if kind == "isotropic" else cfg.relative_sigmas
                res = {anti: perturbation_loss_changes(model, LOSS, probe.train.data, sigmas,
                                                       torch.Generator().manual_seed(cfg.flatness_seed + 1000 * i),
                                                       noise=kind, n_draws=cfg.flatness_draws, antithetic=anti)
                       for anti in (False, True)}
                for j, sigma in enumerate(sigmas):
                    plain, anti = res[False], res[True]
                    rows.append({"arch": arch, "seed": seed, "noise": kind, "sigma": float(sigma),
                                 "plain_mean": float(plain.mean[j]), "plain_stderr": float(plain.stderr[j]),
                                 "antithetic_mean": float(anti.mean[j]), "antithetic_stderr": float(anti.stderr[j]),
                                 "ratio": float(plain.stderr[j] / anti.stderr[j]),
                                 "plain_interval_excludes_0": bool(plain.ci_low[j] > 0 or plain.ci_high[j] < 0),
                                 "antithetic_interval_excludes_0": bool(anti.ci_low[j] > 0 or anti.ci_high[j] < 0)})
    print(f"{cfg.flatness_draws} loss evaluations per σ and run ({cfg.flatness_draws // 2} antithetic pairs), "
          f"{cfg.probe_train_size} training examples")
    print(f"{'arch':7} {'noise':10} {'σ':>6} {'s.e. ratio plain/antithetic (min–median–max over seeds)':>56}"
          f"  {'runs whose interval excludes 0: plain → antithetic'}")
    for arch in ARCHITECTURES:
        for kind in NOISE_KINDS:
            for sigma in sorted({r["sigma"] for r in rows if r["noise"] == kind}):
                sel = [r for r in rows if r["arch"] == arch and r["noise"] == kind and r["sigma"] == sigma]
                ratios = np.array([r["ratio"] for r in sel])
                print(f"{arch:7} {kind:10} {sigma:6g} {np.min(ratios):36.1f} – {np.median(ratios):5.1f} – "
                      f"{np.max(ratios):5.1f}  {sum(r['plain_interval_excludes_0'] for r in sel)}/{len(sel)} → "
                      f"{sum(r['antithetic_interval_excludes_0'] for r in sel)}/{len(sel)}")
    out = Path("outputs/bench/flatness_antithetic.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": args.profile, "draws": cfg.flatness_draws, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
