"""Three-party simulation of JAX functions, in the manner of ``spu.utils.simulation``.

* :class:`Simulator` (from :mod:`ditto_spu.mpc.simulator`): runs a
  :class:`~ditto_spu.plan.Plan` on three parties in threads over in-memory links, through
  the same :class:`~ditto_spu.mpc.runtime.PartyRuntime` the node processes use;
* :func:`sim_jax`: wraps a JAX function so that calling it compiles it to a mixed-ring
  Program (:func:`ditto_spu.frontend.compile`, once per argument signature), secret-shares
  the arguments, runs the plan on the simulator and returns the reconstructed result.
"""

from __future__ import annotations

import functools

from .frontend import compile
from .mpc.simulator import Simulator
from .policy import load_policy
from .quant.emulator import argument_signature

__all__ = ["Simulator", "sim_jax"]


def sim_jax(fn, policy=None, *, simulator=None, static_argnums=(), copts=None, check_ranges=True):
    """Wrap ``fn`` to run as a mixed-ring program on three simulated parties.

    Calling the wrapper compiles ``fn`` for the arguments' shapes and dtypes (cached),
    secret-shares the arguments, runs the plan and returns the outputs in ``fn``'s result
    structure (floats as float64, integers as int64, as reconstructed from the rings).
    ``wrapper.last_stats`` holds the run's :class:`~ditto_spu.mpc.stats.RunStats` (wall time,
    bytes and rounds per step and in total) and ``wrapper.last_program`` the Program.

    ``check_ranges`` (default on): before the secure run, the plaintext emulation of the
    same rings checks every value and product against its ring on these very inputs (the
    simulator holds them anyway) and raises
    :class:`~ditto_spu.quant.RingOverflowError` naming the scope, instead of returning
    what a wrapped ring computes. A deployment cannot do this check (no party sees the
    values): calibrate the policy on representative inputs instead.
    """
    policy = load_policy(policy)
    static_argnums = tuple(static_argnums)
    cache: dict = {}
    checker = None
    if check_ranges:
        from .quant import EmulatorOptions, emulate

        checker = emulate(fn, policy, options=EmulatorOptions(mode="record"), static_argnums=static_argnums)

    @functools.wraps(fn)
    def wrapper(*args):
        key = argument_signature(args, static_argnums)
        try:
            program = cache.get(key)
        except TypeError:  # unhashable static argument
            program = None
        if program is None:
            program = compile(fn, *args, policy=policy, static_argnums=static_argnums, copts=copts)
            try:
                cache[key] = program
            except TypeError:
                pass
        if checker is not None:
            from .quant import raise_on_overflow

            checker.evaluate(*args)
            raise_on_overflow(checker.last_call_report)
        sim = simulator if simulator is not None else Simulator()
        outputs, stats = sim.run(program.plan, program.flatten_inputs(*args))
        wrapper.last_stats = stats
        wrapper.last_program = program
        return program.unflatten_outputs(outputs)

    wrapper.last_stats = None
    wrapper.last_program = None
    return wrapper
