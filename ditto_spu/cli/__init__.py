"""The ``ditto-spu`` command: argument parsing and printing only.

One module per group of subcommands; each has ``add_parser(subparsers)`` and calls the
library (``ditto_spu.infer``, ``.demo``, ``.bench``, ``.distill.run``, ``.distributed``,
``.models.calibration``, ``.frontend``). :func:`main` is the entry point.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
