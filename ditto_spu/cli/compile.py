"""``ditto-spu compile``: show how a program splits into rings, segments and casts.

Targets: a Python function ``package.module:attr`` traced on example shapes
(``--shapes 4x8:float16,8x8:float32``), or a saved StableHLO ``.mlir`` file. Prints the
annotated IR (every value's ring), the segments with their rings, and the casts with
their count, shapes and the bytes they will cost (``bits_per_element`` of the registered
kernel; if none is registered: 384 bits per element for FXP32→FXP64, 0 for FXP64→FXP32).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys

from ..errors import DittoError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compile",
        help="compile a function or StableHLO file to a mixed-ring plan and show it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", help="module:function, file.py:function, or a StableHLO .mlir file")
    p.add_argument(
        "--shapes",
        default="",
        help="example argument shapes for a function: comma-separated SHAPE:DTYPE, "
        "e.g. 4x8:float16,8x8:float32 (scalar: :float32)",
    )
    p.add_argument("--policy", default=None, help="policy JSON file or config name (default: default)")
    p.add_argument("--no-spu", action="store_true", help="skip spu.compile of the segments")
    p.add_argument("--segments", action="store_true", help="also print each segment's StableHLO")
    p.add_argument("--no-ir", action="store_true", help="do not print the annotated IR")
    p.add_argument("--plan", default=None, help="write the serialized plan (JSON) to this file")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.set_defaults(func=run)
    return p


def parse_shapes(text: str) -> list:
    """``"4x8:float16,8:int32,:float32"`` -> example numpy arrays (zeros)."""
    import numpy as np

    arrays = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        shape_text, _, dtype = item.partition(":")
        dtype = dtype or "float32"
        shape = tuple(int(d) for d in shape_text.split("x") if d) if shape_text else ()
        if dtype == "bfloat16":
            import jax.numpy as jnp

            arrays.append(jnp.zeros(shape, jnp.bfloat16))
        else:
            arrays.append(np.zeros(shape, np.dtype(dtype)))
    return arrays


def load_function(spec: str):
    """``package.module:attr`` or ``path/to/file.py:attr`` -> the function."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module:function or file.py:function, got {spec!r}")
    if module_name.endswith(".py"):
        name = os.path.splitext(os.path.basename(module_name))[0]
        spec_obj = importlib.util.spec_from_file_location(name, module_name)
        if spec_obj is None:
            raise ValueError(f"cannot load {module_name}")
        obj = importlib.util.module_from_spec(spec_obj)
        spec_obj.loader.exec_module(obj)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            raise DittoError(
                f"cannot import {module_name!r} for {spec!r} ({e}); give module:function with the module "
                "importable from the current directory, or path/to/file.py:function"
            ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise DittoError(f"{spec!r}: {module_name} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def _compile(args):
    from passes import compile_stablehlo

    from ..frontend import compile as compile_fn
    from ..mpc.segments import compiler_options
    from ..policy import load_policy

    policy = load_policy(args.policy)
    if args.target.endswith((".mlir", ".stablehlo", ".txt")) and os.path.exists(args.target):
        with open(args.target) as f:
            text = f.read()
        return compile_stablehlo(text, policy, compile=not args.no_spu, copts=compiler_options())
    fn = load_function(args.target)
    program = compile_fn(fn, *parse_shapes(args.shapes), policy=policy, compile_segments=not args.no_spu)
    return program.compiled


def run(args) -> int:
    from passes import SegmentPart, cast_costs, describe_parts, format_graph

    compiled = _compile(args)
    graph, parts, plan = compiled.graph, compiled.parts, compiled.plan
    costs = cast_costs(graph, parts)
    segments = [p for p in parts if isinstance(p, SegmentPart)]
    if args.plan:
        with open(args.plan, "w") as f:
            f.write(plan.to_json())
    total_bytes = sum(c["bytes"] or 0 for c in costs)
    if args.json:
        print(
            json.dumps(
                {
                    "segments": [
                        {
                            "index": s.index,
                            "ring": str(s.ring),
                            "ops": len(s.nodes),
                            "inputs": [graph.values[v].label for v in s.inputs],
                            "outputs": [graph.values[v].label for v in s.outputs],
                        }
                        for s in segments
                    ],
                    "casts": costs,
                    "cast_bytes": total_bytes,
                    "rings": [str(r) for r in plan.rings],
                },
                indent=2,
            )
        )
        return 0
    if not args.no_ir:
        print("== annotated IR ==")
        print(format_graph(graph))
        print()
    print(f"== plan: {len(segments)} segments, {len(costs)} casts ==")
    print(describe_parts(graph, parts))
    print()
    print("== casts ==")
    for c in costs:
        shape = "x".join(map(str, c["shape"])) or "scalar"
        cost = "unknown" if c["bytes"] is None else f"{c['bytes']:,} B"
        print(
            f"  {c['src']} -> {c['dst']}  {c['src_ring']} -> {c['dst_ring']}  {shape} {c['dtype']}"
            f"  {c['elements']:,} elements × {c['bits_per_element']} bits = {cost}"
            + (f"  ({c['kernel']})" if c["kernel"] else "")
        )
    by_pair: dict = {}
    for c in costs:
        key = f"{c['src_ring']} -> {c['dst_ring']}"
        n, b = by_pair.get(key, (0, 0))
        by_pair[key] = (n + 1, b + (c["bytes"] or 0))
    for key, (n, b) in by_pair.items():
        print(f"  total {key}: {n} casts, {b:,} B")
    print(f"  total: {len(costs)} casts, {total_bytes:,} B (all parties)")
    if args.segments:
        for step in plan.segments:
            print(f"\n== {step.name} in {step.ring} ==")
            print(step.source)
    return 0
