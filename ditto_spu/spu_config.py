"""SPU settings shared by every runtime of a session: protocol options per ring.

One :class:`SpuOptions` describes how SPU computes (exp/division approximations,
parallelism); :meth:`SpuOptions.runtime_config` turns it into the ``RuntimeConfig`` of
one ring (field and fraction bits come from the RingSpec).
"""

from __future__ import annotations

import dataclasses

from .rings import RingSpec


@dataclasses.dataclass(frozen=True)
class SpuOptions:
    """Runtime options applied to every ring (defaults follow PUMA's/Ditto's 3pc configs)."""

    fxp_exp_mode: str = "EXP_TAYLOR"
    fxp_exp_iters: int = 5
    fxp_div_goldschmidt_iters: int = 2
    enable_intra_op_par: bool = True
    disable_mmul_split: bool = True
    profile: bool = True  # per-op profiling: needed for byte counts of SPU segments

    def runtime_config(self, ring: RingSpec):
        from spu import libspu

        cfg = libspu.RuntimeConfig(
            protocol=libspu.ProtocolKind.ABY3,
            field=ring.spu_field(),
            fxp_fraction_bits=ring.frac_bits,
        )
        cfg.fxp_exp_mode = getattr(libspu.RuntimeConfig.ExpMode, self.fxp_exp_mode)
        cfg.fxp_exp_iters = self.fxp_exp_iters
        cfg.fxp_div_goldschmidt_iters = self.fxp_div_goldschmidt_iters
        cfg.experimental_enable_intra_op_par = self.enable_intra_op_par
        cfg.experimental_disable_mmul_split = self.disable_mmul_split
        cfg.enable_pphlo_profile = self.profile
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> "SpuOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - known
        if unknown:
            from .errors import DittoError

            raise DittoError(
                f"unknown SPU option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**obj)
