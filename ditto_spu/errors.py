"""Errors raised by ditto-spu.

Every error says what was wrong, where (step, variable, rank, op location) and what to
do about it. They all derive from :class:`DittoError` so callers can catch one type.
"""


class DittoError(Exception):
    """Base class of every error ditto-spu raises on purpose."""


class RingError(DittoError):
    """A RingSpec is malformed, or two rings do not fit together (e.g. no kernel)."""


class ShareFormatError(DittoError):
    """A share does not have the layout ditto-spu understands (storage type, shape)."""


class RangeError(DittoError):
    """A value does not fit the ring (or the kernel's valid range) it is placed in."""


class PlanError(DittoError):
    """A Plan is inconsistent: unknown variable, ring mismatch, bad step order."""


class PartyError(DittoError):
    """A party failed while running a plan; carries its rank and the step it was on."""

    def __init__(self, rank: int, step: str, cause: BaseException | str):
        self.rank = rank
        self.step = step
        self.cause = cause
        super().__init__(f"party {rank} failed at step {step!r}: {cause}")


class AllocatorError(DittoError):
    """The 64-byte-aligned allocator needed by FM32 rings is not loaded."""
