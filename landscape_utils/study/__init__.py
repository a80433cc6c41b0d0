"""The MNIST study: settings and registries, data, models, training runs, per-seed jobs,
section summaries and statistics. Import the modules by name (``from landscape_utils.study
import registry``); this package imports nothing itself, so the workflow stays light."""
