"""The LAN/WAN cost model: time = compute + max_party(bytes) / bandwidth + rounds × RTT."""

import pytest

from ditto_spu.bench.costmodel import LAN, MODEL_FORMULA, WAN, Network


def test_paper_settings():
    assert (LAN.bandwidth_bps, LAN.rtt_s) == (5e9, 0.4e-3)
    assert (WAN.bandwidth_bps, WAN.rtt_s) == (400e6, 40e-3)
    assert "RTT" in MODEL_FORMULA and "bandwidth" in MODEL_FORMULA


def test_estimate_adds_compute_transfer_of_the_busiest_party_and_latency():
    net = Network("test", bandwidth_bps=8e6, rtt_s=0.01)  # 1 MB/s
    # 2 MB from the busiest party: 2 s; 30 rounds: 0.3 s; compute 1 s.
    assert net.estimate(1.0, [1_000_000, 2_000_000, 500_000], 30) == pytest.approx(3.3)


def test_estimate_of_nothing_is_the_compute():
    assert LAN.estimate(2.5, [], 0) == 2.5
    assert WAN.estimate(0.0, [0, 0, 0], 0) == 0.0


def test_wan_is_slower_than_lan_for_any_traffic():
    for bytes_sent, rounds in (([10**6] * 3, 0), ([0] * 3, 5), ([10**8] * 3, 1000)):
        assert WAN.estimate(1.0, bytes_sent, rounds) > LAN.estimate(1.0, bytes_sent, rounds)


def test_known_values():
    # 100 MB and 1000 rounds: LAN 0.16 s + 0.4 s, WAN 2 s + 40 s
    assert LAN.estimate(0.0, [100e6], 1000) == pytest.approx(0.16 + 0.4)
    assert WAN.estimate(0.0, [100e6], 1000) == pytest.approx(2.0 + 40.0)
    assert "5 Gbps" in LAN.describe() and "40 ms" in WAN.describe()
