"""Build single-ring Segments directly (hand-built plans, tests, the demo).

The pass layer makes segments from whole programs; this module is the small, direct
route: StableHLO text (or a JAX function) -> stock ``spu.compile`` -> :class:`Segment`.
"""

from __future__ import annotations

from ..plan import Segment
from ..rings import RingSpec


def compiler_options(**overrides):
    """SPU compiler options used for every segment (PUMA's denominator optimisation on)."""
    from spu import libspu

    opts = libspu.CompilerOptions()
    opts.enable_optimize_denominator_with_broadcast = True
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


def compile_stablehlo(text: str, num_inputs: int, copts=None) -> bytes:
    """Compile StableHLO text with stock ``spu.compile`` (all inputs secret)."""
    from spu import api as spu_api
    from spu import libspu

    source = libspu.CompilationSource(
        libspu.SourceIRType.STABLEHLO,
        text.encode() if isinstance(text, str) else text,
        [libspu.Visibility.VIS_SECRET] * num_inputs,
    )
    return spu_api.compile(source, copts if copts is not None else compiler_options())


def segment_from_stablehlo(
    name: str, ring: RingSpec, text: str, input_names, output_names, copts=None
) -> Segment:
    code = compile_stablehlo(text, len(input_names), copts)
    return Segment(name, ring, code, tuple(input_names), tuple(output_names), text)


def segment_from_jax(name: str, ring: RingSpec, fn, example_args, input_names, output_names) -> Segment:
    """Lower ``fn(*example_args)`` with JAX and compile it as one segment of ``ring``."""
    import jax

    text = jax.jit(fn).lower(*example_args).as_text()
    return segment_from_stablehlo(name, ring, text, input_names, output_names)
