"""``ditto-spu``: the parser of every subcommand and the entry point.

Every subcommand first makes sure the process runs under the aligned allocator that
FM32 rings need (re-executing itself once with LD_PRELOAD if necessary).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import DittoError
from . import bench, calibrate, demo, deploy, distill, generate, infer, reports, service
from . import compile as compile_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditto-spu",
        description="Quantization-aware secure Transformer inference on SPU with mixed rings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (reports, demo, infer, generate, deploy, service, compile_command, calibrate, bench, distill):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    from .. import native

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native.ensure_preloaded()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DittoError as e:
        print(f"ditto-spu {args.command}: error: {e}", file=sys.stderr)
        return 2

