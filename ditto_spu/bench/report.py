"""Tables and plots of benchmark results (the JSON of ``ditto-spu bench``).

* :func:`markdown` — per model: a table of the modes (measured wall time, modelled LAN /
  WAN time, bytes per party, rounds, compile time), the ratios of the summary, and the
  breakdown by category (time and party-0 bytes);
* :func:`plot` — one PNG per model: measured time, modelled LAN and WAN time and bytes
  sent by party 0, per mode, stacked by category.

Run on saved results: ``python -m ditto_spu.bench.report a.json b.json --markdown
out.md --plot DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .categories import CATEGORIES
from .costmodel import LAN, MODEL_FORMULA, WAN

#: Plot colours per category (stable across plots).
COLORS = {
    "embedding": "#8c564b",
    "linear": "#1f77b4",
    "softmax": "#ff7f0e",
    "gelu": "#2ca02c",
    "layernorm": "#9467bd",
    "casts": "#d62728",
    "other": "#7f7f7f",
}

MB = 1e6


def load_results(paths) -> list:
    """Result dicts from JSON files (each as written by ``ditto-spu bench --json``)."""
    return [json.loads(Path(p).read_text()) for p in paths]


def _title(rec: dict) -> str:
    emb = "body only (no embedding)" if rec["embedding"] == "none" else "with one-hot embedding"
    return f"{rec['model']}, {rec['layers']} layers, seq {rec['seq_len']}, {emb}"


def _fmt(x, spec: str) -> str:
    """``x`` formatted, or an em dash when the result file has no such figure."""
    return "—" if x is None else format(x, spec)


def _fmt_ratio(x: float) -> str:
    return f"{x:.2f}" if x == x else "—"


def markdown(results: list) -> str:
    """Markdown tables for a list of result dicts (one section per model / config)."""
    lines = []
    for res in results:
        recs = res["records"]
        if not recs:
            continue
        r0 = recs[0]
        lines += [f"### {_title(r0)}", ""]
        if res["meta"].get("command"):
            lines += ["```", res["meta"]["command"], "```", ""]
        lines += [
            "| mode | wall (s, measured) | CPU (s) | LAN (s, model) | WAN (s, model) | MB sent P0 / P1 / P2 "
            "| rounds | compile (s) | segments / casts / kernel calls | max abs err | load avg |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in recs:
            mb = " / ".join(f"{b / MB:.0f}" for b in r["bytes_sent"])
            lines.append(
                f"| {r['mode']} | {r['wall_s']:.1f} | {_fmt(r.get('cpu_s'), '.0f')} | {r['lan_s']:.1f} | {r['wan_s']:.1f} | {mb} "
                f"| {r['rounds']} | {r['compile_s']:.0f} | {r['segments']} / {r['cast_steps']} / {r.get('kernel_call_steps', 0)} "
                f"| {r['max_abs_err']:.2g} | {_fmt(max(r['load_average']) if r.get('load_average') else None, '.1f')} |"
            )
        ratios = res.get("summary", {}).get("ratios", {})
        if ratios:
            lines += [
                "",
                "| ratio | wall | CPU | LAN | WAN | bytes (max party) | rounds | speed-up (wall / LAN / WAN) |",
                "|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            for pair, q in ratios.items():
                speedups = " / ".join(f"{1 / q[k]:.2f}×" for k in ("wall_s", "lan_s", "wan_s"))
                lines.append(
                    f"| {pair} | {_fmt_ratio(q['wall_s'])} | {_fmt(q.get('cpu_s'), '.2f')} | {_fmt_ratio(q['lan_s'])} | "
                    f"{_fmt_ratio(q['wan_s'])} | {_fmt_ratio(q['bytes_sent'])} | "
                    f"{_fmt_ratio(q['rounds'])} | {speedups} |"
                )
        used = [c for c in CATEGORIES if any(r["breakdown"][c]["steps"] for r in recs)]
        lines += [
            "",
            "Breakdown by category: measured time (s) / MB sent by P0 / rounds",
            "",
            "| mode | " + " | ".join(used) + " | unattributed time |",
            "|---|" + "---:|" * (len(used) + 1),
        ]
        for r in recs:
            cells = []
            for c in used:
                b = r["breakdown"][c]
                cells.append(f"{b['wall_s']:.1f} / {b['bytes_sent'][0] / MB:.0f} / {b['rounds']}")
            rest = r["wall_s"] - sum(r["breakdown"][c]["wall_s"] for c in CATEGORIES)
            lines.append(f"| {r['mode']} | " + " | ".join(cells) + f" | {rest:.1f} |")
        cast_rows = [r for r in recs if r.get("casts_by_component")]
        if cast_rows:
            lines += ["", "Casts by the component they sit in: MB sent by P0 / steps / elements", ""]
            for r in cast_rows:
                parts = ", ".join(
                    f"{comp} {c['bytes_sent'][0] / MB:.1f} MB / {c['steps']} / {c['elements']:,}"
                    for comp, c in sorted(r["casts_by_component"].items())
                )
                lines.append(f"- {r['mode']}: {parts}")
        call_rows = [r for r in recs if r.get("kernel_calls")]
        if call_rows:
            lines += ["", "Kernel calls (ops run by ditto-spu's own protocols): time (s) / MB sent by P0 / rounds / steps", ""]
            for r in call_rows:
                parts = ", ".join(
                    f"{k} {c['wall_s']:.1f} / {c['bytes_sent'][0] / MB:.1f} / {c['rounds']} / {c['steps']}"
                    for k, c in sorted(r["kernel_calls"].items())
                )
                lines.append(f"- {r['mode']}: {parts}")
        for failure in res["meta"].get("failures", []):
            lines += ["", f"**Mode {failure['mode']} FAILED**: `{failure['error'].splitlines()[0][:300]}`"]
        lines.append("")
    lines += [
        f"Cost model (modelled, not measured): {MODEL_FORMULA}; {LAN.describe()}; "
        f"{WAN.describe()}. Rounds = kernel rounds + SPU send actions of the busiest party "
        "(an upper bound). Ratios < 1: ditto is cheaper; speed-up = 1 / ratio. CPU: CPU seconds "
        "of the simulation process (all 3 parties) during the run, less sensitive than wall "
        "time to other load on the machine; load avg: the higher 1-minute load average "
        "before / after the run.",
        "",
    ]
    return "\n".join(lines)


def _short(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def plot(result: dict, directory, *, stem=None) -> str:
    """One PNG: time (measured, LAN, WAN model) and P0 bytes per mode, stacked by
    category. Returns the file path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = result["records"]
    r0 = recs[0]
    os.makedirs(directory, exist_ok=True)
    if stem is None:
        stem = f"bench_{r0['model']}_L{r0['layers']}_s{r0['seq_len']}_{r0['embedding']}"
        if result.get("meta", {}).get("config", {}).get("kernels") is False:
            stem += "_nokernels"
    path = os.path.join(directory, f"{stem}.png")
    modes = [r["mode"] for r in recs]
    panels = [
        ("wall time, measured (s)", lambda b: b["wall_s"], lambda r: r["wall_s"]),
        ("LAN time, modelled (s)", lambda b: b["lan_s"], lambda r: r["lan_s"]),
        ("WAN time, modelled (s)", lambda b: b["wan_s"], lambda r: r["wan_s"]),
        ("MB sent by party 0", lambda b: b["bytes_sent"][0] / MB, lambda r: r["bytes_sent"][0] / MB),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    for ax, (label, per_cat, total) in zip(axes, panels):
        bottom = [0.0] * len(recs)
        for cat in CATEGORIES:
            vals = [per_cat(r["breakdown"][cat]) if r["breakdown"][cat]["steps"] else 0.0 for r in recs]
            if not any(vals):
                continue
            ax.bar(modes, vals, bottom=bottom, color=COLORS[cat], label=cat)
            bottom = [b + v for b, v in zip(bottom, vals)]
        for i, r in enumerate(recs):
            ax.text(i, bottom[i], _short(total(r)), ha="center", va="bottom", fontsize=9)
        ax.set_title(label, fontsize=10)
        ax.margins(y=0.12)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    fig.suptitle(f"{_title(r0)} — 3-party ABY3 simulation, stock SPU 0.9.5", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_spu.bench.report",
        description="markdown tables and plots from ditto-spu bench JSON results",
    )
    parser.add_argument("results", nargs="+", help="JSON files written by ditto-spu bench --json")
    parser.add_argument("--markdown", default=None, help="write the tables to this file (default: print)")
    parser.add_argument("--plot", default=None, help="write one PNG per result into this directory")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    text = markdown(results)
    if args.markdown:
        Path(args.markdown).write_text(text)
    else:
        print(text)
    if args.plot:
        for res in results:
            print(plot(res, args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
