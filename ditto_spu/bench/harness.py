"""Benchmark harness: every mode on the same model and input, one 3-party simulation each.

:func:`run_bench` takes a :class:`BenchConfig` (model, modes, sequence length, layers,
embedding), and for each mode

1. builds the function to measure: the transformer body from the embedding output on
   (``embedding="none"``, :mod:`ditto_spu.bench.body`; the paper-comparable setting) or
   the whole model from the client's one-hot token matrix (``embedding="onehot"``);
2. compiles it with segments split by cost category
   (:func:`~ditto_spu.bench.categories.split_by_category`), timed as ``compile_s``;
3. runs the plan on the 3-party simulator (wall time of the run only: input sharing and
   compilation excluded), reconstructs the output and compares it with the plaintext
   forward of the same function (``max_abs_err``: a sanity check, random weights);
4. records bytes per party, rounds, the LAN/WAN cost model (:mod:`.costmodel`), and the
   breakdown by category.

All modes get the same input: the same random token ids (seed), embedded in plaintext by
each mode's own embedding (so dtypes match what the full model would feed the body), and
the same random-initialised weights.

The result (:class:`BenchResult`) serialises to the JSON of ``ditto-spu bench --json``:
``{"meta": ..., "records": [...], "summary": {...}}``; one record per (model, mode).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import time
from typing import Callable, Optional

import numpy as np

from ..metrics import relative_l2
from .categories import CATEGORIES, split_by_category, step_categories, step_category
from .costmodel import LAN, MODEL_FORMULA, WAN

DEFAULT_MODES = ("puma", "mpcformer", "ditto")
EMBEDDINGS = ("none", "onehot")
#: (numerator, denominator) mode pairs whose ratios the summary reports (when both ran).
#: ``ditto@float32`` is Ditto's approximations on one FXP64 ring: ditto / ditto@float32
#: is what the mixed rings alone buy.
RATIO_PAIRS = (("ditto", "puma"), ("ditto", "mpcformer"), ("ditto", "ditto@float32"))


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to benchmark. ``layers=None``: all of the model's layers."""

    model: str = "tiny"
    modes: tuple = DEFAULT_MODES
    seq_len: int = 128
    layers: Optional[int] = None
    embedding: str = "none"
    batch: int = 1
    seed: int = 0
    policy: Optional[str] = None  # policy JSON / config name; None: configs/policy_default.json
    kernels: bool = True  # let the compiler hand ops to ditto-spu's own kernels (FXP32 matmul)
    recv_timeout_s: float = 900.0

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if not self.modes:
            raise ValueError("no modes to benchmark")
        if self.seq_len < 1 or self.batch < 1:
            raise ValueError("seq_len and batch must be positive")
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"layers must be positive, got {self.layers}")


@dataclasses.dataclass
class BenchResult:
    meta: dict
    records: list
    summary: dict

    def as_dict(self) -> dict:
        return {"meta": self.meta, "records": self.records, "summary": self.summary}

    def record(self, mode: str) -> dict:
        for r in self.records:
            if r["mode"] == mode:
                return r
        raise KeyError(mode)


# ---- model and inputs ------------------------------------------------------------------


def _layer_override(name: str, layers: Optional[int]) -> dict:
    if layers is None:
        return {}
    return {"n_layer": layers} if "gpt2" in name else {"num_hidden_layers": layers}


def load_bench_model(config: BenchConfig):
    """The model, base task (no pooler / LM head), with ``config.layers`` layers."""
    from ..models import load_model

    return load_model(config.model, task="base", **_layer_override(config.model, config.layers))


def num_layers(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)


def token_ids(model, config: BenchConfig) -> np.ndarray:
    vocab = model.config.vocab_size
    rng = np.random.RandomState(config.seed)
    return rng.randint(1, vocab, (config.batch, config.seq_len)).astype(np.int32)


def build_case(model, mode, config: BenchConfig, ids: np.ndarray):
    """(function, example args) measured for ``mode`` (see the module docstring)."""
    import jax

    from ..models import one_hot_ids, prepare_params, secure_forward
    from .body import body_forward, body_params, embedding_forward, embedding_params

    params = prepare_params(model.params, mode)
    if config.embedding == "onehot":
        fn = secure_forward(model, mode, output="last_hidden_state")
        x = one_hot_ids(ids, model.config.vocab_size, mode.dtypes.low_dtype)
        return fn, (params, x)
    # The embedding output the full secure forward would feed the body: its dtype from
    # the mode, its values computed in float32 (XLA's CPU float16 matmuls are emulated
    # and take minutes on the one-hot × table product; the values differ by one float16
    # rounding, which does not matter for a cost benchmark).
    dtype = jax.eval_shape(embedding_forward(model, mode), embedding_params(model, params), ids).dtype
    high = mode.all_high()
    embed = jax.jit(embedding_forward(model, high))
    hidden = np.asarray(embed(embedding_params(model, prepare_params(model.params, high)), ids)).astype(dtype)
    return body_forward(model, mode), (body_params(model, params), hidden)


def _kernel_option(config: BenchConfig) -> dict:
    """``kernels=...`` for :func:`ditto_spu.frontend.compile` when the compiler has it."""
    import inspect

    from .. import frontend

    if "kernels" in inspect.signature(frontend.compile).parameters:
        return {"kernels": config.kernels}
    if not config.kernels:
        raise ValueError("this compiler has no kernel selection to turn off (kernels=False)")
    return {}


def _git_state() -> dict:
    """Commit and modified files of the source tree (results depend on uncommitted code too)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": head, "modified": [line[3:] for line in status.splitlines() if line.strip()]}


# ---- one mode ----------------------------------------------------------------------------


def _breakdown(stats, categories: dict) -> tuple[dict, dict, dict]:
    """(per-category costs, casts per component, kernel calls per kernel) from a RunStats;
    ``categories``: :func:`~ditto_spu.bench.categories.step_categories` of the plan."""
    world = len(stats.steps)

    def empty():
        return {"bytes_sent": [0] * world, "rounds": 0, "steps": 0, "elements": 0}

    tables = {"category": {c: empty() for c in CATEGORIES}, "casts": {}, "calls": {}}
    wall = {}  # (table, key) -> per-party seconds
    rounds = {}
    for rank, party in enumerate(stats.steps):
        for s in party:
            cat, comp = categories.get(s.name) or (step_category(s.name, s.kind),) * 2
            targets = [("category", cat)]
            if s.kind != "segment":
                targets.append(("casts" if cat == "casts" else "calls", comp))
            for table_id, key in targets:
                entry = tables[table_id].setdefault(key, empty())
                entry["bytes_sent"][rank] += s.bytes_sent
                wall.setdefault((table_id, key), [0.0] * world)[rank] += s.wall_s
                rounds.setdefault((table_id, key), [0] * world)[rank] += s.rounds
                if rank == 0:
                    entry["steps"] += 1
                    entry["elements"] += s.elements
    # Time per category: that of the party whose steps took longest in total (the
    # critical one), so that categories add up to at most the run's wall time; the
    # parties' steps overlap in time, so mixing parties would count waits twice.
    critical = max(range(world), key=lambda r: sum(s.wall_s for s in stats.steps[r]))
    for table_id, table in tables.items():
        for key, entry in table.items():
            entry["wall_s"] = wall.get((table_id, key), [0.0] * world)[critical]
            entry["rounds"] = max(rounds.get((table_id, key), [0]))
    cats = tables["category"]
    for entry in cats.values():
        entry["lan_s"] = LAN.estimate(entry["wall_s"], entry["bytes_sent"], entry["rounds"])
        entry["wan_s"] = WAN.estimate(entry["wall_s"], entry["bytes_sent"], entry["rounds"])
    return cats, tables["casts"], tables["calls"]


def _top_ops(stats, limit: int = 12) -> list:
    """Party 0's SPU ops aggregated over segments, by bytes sent (then time)."""
    agg: dict = {}
    for s in stats.steps[0]:
        for op in s.ops:
            a = agg.setdefault(op["op"], {"op": op["op"], "count": 0, "seconds": 0.0, "bytes_sent": 0, "send_actions": 0})
            a["count"] += op["count"]
            a["seconds"] += op["seconds"]
            a["bytes_sent"] += op["bytes_sent"]
            a["send_actions"] += op["send_actions"]
    rows = sorted(agg.values(), key=lambda a: (a["bytes_sent"], a["seconds"]), reverse=True)
    return rows[:limit]


def bench_mode(model, mode_name: str, config: BenchConfig, ids, *, phase: Callable[[str], None] = lambda s: None) -> dict:
    """Compile and run one mode; the record (see the module docstring)."""
    import jax

    from .. import frontend
    from ..models import load_mode
    from ..plan import KernelStep, Segment
    from ..shares import reconstruct
    from ..simulation import Simulator

    mode = load_mode(mode_name)
    phase("trace")
    fn, args = build_case(model, mode, config, ids)
    phase("compile")
    t0 = time.perf_counter()
    program = frontend.compile(fn, *args, policy=config.policy, split_by=split_by_category, **_kernel_option(config))
    compile_s = time.perf_counter() - t0
    plan = program.plan
    phase("reference")
    reference = np.asarray(jax.jit(fn)(*args), np.float64)
    phase("share")
    sim = Simulator(recv_timeout_s=config.recv_timeout_s)
    inputs = program.flatten_inputs(*args)
    shares = sim.share_inputs(plan, inputs, np.random.default_rng(config.seed))
    del inputs
    phase("run")
    load_before = os.getloadavg()[0]
    cpu0 = time.process_time()
    out_shares, stats = sim.run_shares(plan, shares)
    cpu_s = time.process_time() - cpu0
    del shares
    outputs = {b.name: reconstruct([out_shares[r][b.name] for r in range(3)]) for b in plan.outputs}
    result = np.asarray(program.unflatten_outputs(outputs), np.float64)
    err = np.abs(result - reference)

    breakdown, casts, calls = _breakdown(stats, step_categories(program))
    bytes_sent = stats.bytes_sent
    rounds = stats.rounds
    n_segments = sum(1 for s in plan.steps if isinstance(s, Segment))
    n_casts = sum(1 for s in plan.steps if isinstance(s, KernelStep))
    return {
        "model": config.model,
        "mode": mode.name,
        "mode_description": str(mode),
        "seq_len": config.seq_len,
        "batch": config.batch,
        "layers": num_layers(model),
        "embedding": config.embedding,
        "rings": sorted(str(r) for r in plan.rings),
        "segments": n_segments,
        "cast_steps": n_casts,
        "kernel_call_steps": len(plan.steps) - n_segments - n_casts,
        "compile_s": compile_s,
        "wall_s": stats.wall_s,
        "cpu_s": cpu_s,  # CPU time of the process (3 parties, all threads) during the run
        "load_average": [load_before, os.getloadavg()[0]],  # 1-min load before / after the run
        "steps_wall_s": max(sum(s.wall_s for s in party) for party in stats.steps),  # critical party
        "bytes_sent": bytes_sent,
        "bytes_received": [sum(s.bytes_received for s in party) for party in stats.steps],
        "setup_bytes_sent": list(stats.setup_bytes_sent),
        "rounds": rounds,
        "kernel_rounds": stats.kernel_rounds,
        "segment_send_actions": stats.segment_send_actions,
        "lan_s": LAN.estimate(stats.wall_s, bytes_sent, rounds),
        "wan_s": WAN.estimate(stats.wall_s, bytes_sent, rounds),
        "max_abs_err": float(err.max()),
        "rel_l2_err": relative_l2(result, reference),
        "breakdown": breakdown,
        "casts_by_component": casts,
        "kernel_calls": calls,
        "by_kind": stats.by_kind(),
        "top_ops_p0": _top_ops(stats),
    }


# ---- all modes -----------------------------------------------------------------------------


def summarize(records: list) -> dict:
    """Ratios numerator/denominator of wall, LAN, WAN time and bytes for :data:`RATIO_PAIRS`
    (a ratio < 1: the numerator mode is cheaper; ``speedup`` = 1/ratio of wall time)."""
    by_mode = {r["mode"]: r for r in records}
    ratios = {}
    for num, den in RATIO_PAIRS:
        if num not in by_mode or den not in by_mode:
            continue
        a, b = by_mode[num], by_mode[den]
        ratios[f"{num}/{den}"] = {
            "wall_s": a["wall_s"] / b["wall_s"],
            "lan_s": a["lan_s"] / b["lan_s"],
            "wan_s": a["wan_s"] / b["wan_s"],
            "bytes_sent": max(a["bytes_sent"]) / max(b["bytes_sent"]),
            "rounds": a["rounds"] / b["rounds"] if b["rounds"] else float("nan"),
        }
        if a.get("cpu_s") and b.get("cpu_s"):
            ratios[f"{num}/{den}"]["cpu_s"] = a["cpu_s"] / b["cpu_s"]
    return {"ratios": ratios}


def _meta(config: BenchConfig, command: Optional[str]) -> dict:
    import jax
    import spu

    from ..simulation import Simulator

    opts = Simulator().options.to_dict()
    return {
        "command": command,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": _cpu_count(), "python": platform.python_version()},
        "versions": {"spu": getattr(spu, "__version__", "?"), "jax": jax.__version__},
        "config": dataclasses.asdict(config),
        "spu_options": opts,
        "cost_model": {
            "formula": MODEL_FORMULA,
            "lan": LAN.describe(),
            "wan": WAN.describe(),
            "note": "modelled, not measured: this machine cannot shape latency",
        },
        "categories": list(CATEGORIES),
        "source": _git_state(),
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_bench(
    config: BenchConfig, *, command: Optional[str] = None, progress=None, checkpoint=None
) -> BenchResult:
    """Benchmark every mode of ``config`` (in order) on the same model and input.

    ``progress(mode, phase)`` (optional) is called as each mode enters a phase (trace,
    compile, reference, share, run, done, failed). A mode that fails is recorded in
    ``result.meta["failures"]`` (mode, error) and the others still run.
    ``checkpoint(result)`` (optional) is called with the results so far after each mode
    (e.g. to save them: full-size runs take long)."""
    import gc
    import traceback

    notify = progress or (lambda mode, phase: None)
    model = load_bench_model(config)
    ids = token_ids(model, config)
    meta = _meta(config, command)
    meta["failures"] = []
    records = []
    for mode_name in config.modes:
        try:
            rec = bench_mode(model, mode_name, config, ids, phase=lambda p, m=mode_name: notify(m, p))
        except Exception as e:  # noqa: BLE001 - recorded, reported, the other modes still run
            meta["failures"].append(
                {"mode": mode_name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            )
            notify(mode_name, "failed")
        else:
            records.append(rec)
            notify(mode_name, "done")
        gc.collect()
        if checkpoint is not None:
            checkpoint(BenchResult(meta, list(records), summarize(records)))
    return BenchResult(meta, records, summarize(records))
