"""What one party receives in the upcast does not depend on the secret.

For each receiving party we collect its view of the protocol (the words it receives,
plus the output share it derives from them and simple combinations with its own input
shares) for two very different secrets — all zeros and values at the top of the valid
range — with fresh shares and fresh PRG seeds, and compare the two distributions
feature by feature (two-sample Kolmogorov–Smirnov and per-bit frequencies).

The same check is run on two deliberately broken variants that feed the unchanged
kernel a defective PRG, to show the check can fail:
- "no masks": every pad is zero, so the OT candidates travel in the clear;
- "no re-randomisation": the OT pads are fine (every word on the wire is uniform) but
  t0 = t1 = 0, so the output share t2 a receiver derives equals the wrap count t, whose
  distribution depends on x. Marginals of received words cannot see this; the view can.
"""

import numpy as np
import pytest
from casting import share_scaled
from scipy.stats import ks_2samp
from threeparty import RecordingLink, run_three_parties

from ditto_spu.kernels.casts import run_cast
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32, FXP64

SRC, DST = FXP32(10), FXP64(18)
N = 20000
HONEST_MIN_P = 1e-4  # ~40 features compared: a false alarm needs p < 1e-4 somewhere
BROKEN_MAX_P = 1e-8


class ZeroPadPRG:
    """Broken PRG double: every pad is zero (the protocol's messages go unmasked)."""

    def __init__(self, rank):
        self.rank = rank

    def shared(self, peer_rank, shape, dtype=np.uint64):
        return np.zeros(shape, dtype=dtype)

    private = shared


class NoRerandomisationPRG:
    """Broken PRG double: real pads, but the first row of each (3, n) draw (t0 / t1) is zero."""

    def __init__(self, inner):
        self.inner = inner

    def shared(self, peer_rank, shape, dtype=np.uint64):
        pads = np.array(self.inner.shared(peer_rank, shape, dtype))
        pads[0] = 0
        return pads


def secrets_to_compare(seed):
    rng = np.random.default_rng(seed)
    zeros = np.zeros(N, dtype=np.int64)
    near_top = (2**30 - 1) - rng.integers(0, 64, N)
    return zeros, near_top


def receiver_views(scaled, seed, make_prgs):
    """{rank: (own input components, {src: received uint32 words})} for one run."""
    shares = share_scaled(scaled, SRC, seed=seed)

    def party(ctx):
        run_cast(ctx, shares[ctx.rank], DST)
        received = {src: np.frombuffer(data, dtype=np.uint32) for src, data in ctx.link.received}
        return shares[ctx.rank].components, received

    views = run_three_parties(party, prgs=make_prgs(seed), link_class=RecordingLink)
    return dict(enumerate(views))


def view_features(rank, own, received):
    """Named uint32 features of one receiver's view (P1 or P2)."""
    other_receiver = 3 - rank  # P1 <-> P2
    candidates = received[0].reshape(2, -1)
    pad = received[other_receiver]
    s2 = own[:, 1] if rank == 1 else own[:, 0]  # both receivers hold s2
    choice = (s2 >> np.uint32(31)).astype(bool)
    derived_t2 = np.where(choice, candidates[1], candidates[0]) - pad
    words = {"candidate0": candidates[0], "candidate1": candidates[1], "pad": pad, "derived_t2": derived_t2}
    features = dict(words)
    for name, w in words.items():
        features[f"{name}+s_own0+s_own1"] = w + own[:, 0] + own[:, 1]
        features[f"{name}-s_own0"] = w - own[:, 0]
        features[f"{name}-s_own1"] = w - own[:, 1]
    return features


def compare_views(views_a, views_b):
    """Smallest KS p-value and largest per-bit z-score over all receivers and features."""
    worst_p, worst_z, worst_name = 1.0, 0.0, None
    for rank in (1, 2):
        fa = view_features(rank, *views_a[rank])
        fb = view_features(rank, *views_b[rank])
        for name in fa:
            a, b = fa[name], fb[name]
            p = ks_2samp(a / 2.0**32, b / 2.0**32).pvalue
            bits_a = np.unpackbits(a.view(np.uint8)).reshape(-1, 32).mean(axis=0)
            bits_b = np.unpackbits(b.view(np.uint8)).reshape(-1, 32).mean(axis=0)
            z = np.max(np.abs(bits_a - bits_b)) / np.sqrt(2 * 0.25 / N)
            if p < worst_p:
                worst_p, worst_name = p, f"P{rank}:{name}"
            worst_z = max(worst_z, z)
    return worst_p, worst_z, worst_name


def honest_prgs(seed):
    return PairwisePRG.deterministic_trio(1000 + seed)


def test_p0_receives_nothing():
    views = receiver_views(np.arange(100), 1, honest_prgs)
    assert views[0][1] == {}


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4)])
def test_received_view_is_independent_of_the_secret(seeds):
    zeros, near_top = secrets_to_compare(seeds[0])
    views_a = receiver_views(zeros, seeds[0], honest_prgs)
    views_b = receiver_views(near_top, seeds[1], honest_prgs)
    worst_p, worst_z, name = compare_views(views_a, views_b)
    assert worst_p > HONEST_MIN_P, f"view differs between secrets at {name} (p={worst_p:.2e})"
    assert worst_z < 6.0


def test_received_view_is_uniform():
    views = receiver_views(np.zeros(N, dtype=np.int64), 9, honest_prgs)
    uniform = np.random.default_rng(0).integers(0, 2**32, N, dtype=np.uint64).astype(np.uint32)
    for rank in (1, 2):
        for name, feature in view_features(rank, *views[rank]).items():
            assert ks_2samp(feature / 2.0**32, uniform / 2.0**32).pvalue > HONEST_MIN_P, name


@pytest.mark.parametrize(
    "make_broken_prgs",
    [
        lambda seed: [ZeroPadPRG(r) for r in range(3)],
        lambda seed: [NoRerandomisationPRG(p) for p in PairwisePRG.deterministic_trio(seed)],
    ],
    ids=["no-masks", "no-rerandomisation"],
)
def test_the_check_detects_a_leaky_variant(make_broken_prgs):
    zeros, near_top = secrets_to_compare(5)
    views_a = receiver_views(zeros, 5, make_broken_prgs)
    views_b = receiver_views(near_top, 6, make_broken_prgs)
    worst_p, _, name = compare_views(views_a, views_b)
    assert worst_p < BROKEN_MAX_P, f"broken variant not detected (best p={worst_p:.2e} at {name})"
