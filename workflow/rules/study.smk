# Training runs, per-unit probe jobs, one notebook per section and architecture, the comparison
# and the report.


rule settings:
    output:
        f"{SD}/settings.json",
    params:
        record=short_hash(STUDY.record()),
    localrule: True
    shell:
        "{PY} -m landscape_utils settings {STUDY_ARGS} > /dev/null"


rule train:
    output:
        f"{SD}/runs/{{arch}}/{{run}}.json",
    params:
        key=lambda w: CFG.run_config(w.arch, units.parse_run(w.run)).key(),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=GPU,
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m landscape_utils run --arch {wildcards.arch} --run {wildcards.run} "
        "{STUDY_ARGS} --quiet --out {output} > /dev/null"


rule probe:
    input:
        runs=lambda w: run_files(w.arch, block_units(w.section, w.block, w.arch)),
        upstream=lambda w: [str(units.block_path(SD, u, w.arch, *_block_index(w.block)))
                            for u in registry.SECTIONS[w.section].reads],
    output:
        f"{SD}/units/{{section}}/{{arch}}/{{block}}.json",
    params:
        key=lambda w: short_hash([units.unit_key(w.section, w.arch, u, CFG) for u in block_units(w.section, w.block, w.arch)]),
        units=lambda w: " ".join(units.unit_name(u) for u in block_units(w.section, w.block, w.arch)),
    threads: 1
    resources:
        mem_mb=lambda w: registry.SECTIONS[w.section].mem_mb,
        runtime=lambda w: registry.SECTIONS[w.section].runtime_min * len(block_units(w.section, w.block, w.arch)),
        gpu=lambda w: GPU if registry.SECTIONS[w.section].gpu else 0,
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m landscape_utils probe {wildcards.section} --arch {wildcards.arch} "
        "--units {params.units} {STUDY_ARGS} --out {output}"


rule notebook:
    input:
        notebook=lambda w: f"notebooks/{registry.SECTIONS[w.section].notebook}.ipynb",
        units=lambda w: block_files(w.section, w.arch),
    output:
        executed=f"{SD}/executed/{{arch}}/{{section}}.ipynb",
        summary=f"{SD}/summaries/{{section}}/{{arch}}.json",
    params:
        notebook=lambda w: registry.SECTIONS[w.section].notebook,
        settings=lambda w: notebook_settings(w.section),
        code=units.notebook_source_digest(),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m landscape_utils notebook {params.notebook} --arch {wildcards.arch} "
        "{STUDY_ARGS} --out {output.executed}"


rule variance:
    input:
        runs=lambda w: [str(units.run_pointer_path(SD, w.arch, r)) for r in units.noise_runs(CFG)],
    output:
        str(units.noise_path(SD, "{arch}")),
    params:
        key=lambda w: units.noise_key(w.arch, CFG),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
        gpu=GPU,
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m landscape_utils variance --arch {wildcards.arch} {STUDY_ARGS} --out {output}"


rule comparison:
    input:
        notebook=f"notebooks/{registry.COMPARISON_NOTEBOOK}.ipynb",
        summaries=[f"{SD}/summaries/{s}/{a}.json" for s in SECTIONS for a in ARCHS],
        noise=[str(units.noise_path(SD, a)) for a in ARCHS],
    output:
        f"{SD}/executed/comparison.ipynb",
    params:
        notebook=registry.COMPARISON_NOTEBOOK,
        settings=notebook_settings(),
        code=units.notebook_source_digest(),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    shell:
        "OMP_NUM_THREADS={threads} {PY} -m landscape_utils notebook {params.notebook} {STUDY_ARGS} "
        "--out {output}"


rule report:
    input:
        settings=f"{SD}/settings.json",
        sections=[f"{SD}/executed/{a}/{s}.ipynb" for s in SECTIONS for a in ARCHS],
        comparison=f"{SD}/executed/comparison.ipynb",
    output:
        REPORT,
    params:
        code=source_digest((REPO / "landscape_utils" / "report").glob("*.py")),
    localrule: True
    shell:
        "{PY} -m landscape_utils report {STUDY_ARGS} --out {output} > /dev/null"
