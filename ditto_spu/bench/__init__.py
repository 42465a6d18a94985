"""Benchmarks: modes side by side on one model, with a cost breakdown and a network model.

* :mod:`.harness` — :func:`run_bench` (:class:`BenchConfig` → :class:`BenchResult`):
  compile and run every mode on the same model and input (3-party simulation);
* :mod:`.body` — the transformer body under a mode (forward from the embedding output);
* :mod:`.categories` — cost categories of ops from jax name scopes (``split_by``);
* :mod:`.costmodel` — LAN / WAN time model (paper settings);
* :mod:`.report` — markdown tables and plots.

The command is ``ditto-spu bench`` (:mod:`ditto_spu.cli.bench`).
"""

from .categories import CATEGORIES, categorize, split_by_category
from .costmodel import LAN, MODEL_FORMULA, WAN, Network
from .harness import BenchConfig, BenchResult, run_bench

__all__ = [
    "CATEGORIES",
    "LAN",
    "MODEL_FORMULA",
    "WAN",
    "BenchConfig",
    "BenchResult",
    "Network",
    "categorize",
    "run_bench",
    "split_by_category",
]
