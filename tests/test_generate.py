"""GPT-2 generation under MPC with the key/value cache in secret shares (ditto_spu.generate)."""

import jax
import numpy as np
import pytest

from ditto_spu import generate as gen
from ditto_spu.errors import DittoError
from ditto_spu.models import decoding, load_mode, load_model, one_hot_ids, prepare_params, secure_forward
from ditto_spu.shares import AShare, reconstruct

PROMPT = [5, 17, 300, 42, 7, 11, 250, 3]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-gpt2")


@pytest.fixture(scope="module")
def small():
    # GPT2Config(vocab_size=1000, n_embd=256, n_layer=2, n_head=4, n_positions=128), random weights
    return load_model("gpt2-base", vocab_size=1000, n_embd=256, n_layer=2, n_head=4, n_positions=128)


@pytest.mark.parametrize("mode_name, tol", [("exact", 1e-5), ("ditto", 2e-3)])
def test_prompt_pass_and_step_compute_the_full_forward(tiny, mode_name, tol):
    """The prompt pass's logits are the full forward's at the last real token, and a step
    against the prompt's cache gives the full forward of the longer sequence (plaintext)."""
    mode = load_mode(mode_name)
    params = prepare_params(tiny.params, mode)
    full = jax.jit(secure_forward(tiny, mode))
    ids = PROMPT + [99]
    want = np.asarray(full(params, one_hot_ids(np.array([ids]), 512, mode.dtypes.low_dtype),
                           np.ones((1, len(ids)), np.int32))[0], np.float64)
    logits, keys, values = jax.jit(decoding.prompt_function(tiny, mode))(
        params, *decoding.prompt_inputs(tiny, mode, PROMPT, 16))
    np.testing.assert_allclose(np.asarray(logits[0], np.float64), want[len(PROMPT) - 1], rtol=0, atol=tol * np.abs(want).max())
    low = mode.dtypes.low_dtype
    slots = 16
    cache_k = tuple(np.asarray(k, low) * (np.arange(slots) < len(PROMPT))[None, :, None, None] for k in keys)
    cache_v = tuple(np.asarray(v, low) * (np.arange(slots) < len(PROMPT))[None, :, None, None] for v in values)
    step_logits, new_k, _ = jax.jit(decoding.step_function(tiny, mode))(
        params, *decoding.step_inputs(tiny, mode, 99, len(PROMPT), len(PROMPT), slots), cache_k, cache_v)
    np.testing.assert_allclose(np.asarray(step_logits[0], np.float64), want[-1], rtol=0, atol=tol * np.abs(want).max())
    assert new_k[0].shape == (1, 1, 4, 16)


def _assert_secure_follows(reference_tokens, summary_key, summary):
    """Tokens equal, except where the reference's greedy choice was a near-tie (its top-2
    margin below 4× the logits' largest error along the secure path)."""
    vs = summary[summary_key]
    for flip in vs["greedy_flips"]:
        step = flip["step"]
        err = vs["logits_rel_l2_max"] * max(abs(x) for x in [flip["reference_margin"], 1.0])
        assert flip["reference_margin"] < 4 * err + 1e-3, (step, flip, vs["logits_rel_l2_max"])
    if not vs["greedy_flips"]:
        assert summary["tokens"] == reference_tokens


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_secure_greedy_tokens_equal_the_emulation_ditto(which, request):
    model = request.getfixturevalue(which)
    summary = gen.run_generation(model, "ditto", PROMPT, 16, model_name=which)
    assert len(summary["tokens"]) == 16
    _assert_secure_follows(summary["emulation_tokens"], "vs_emulation", summary)
    # secure vs its emulation along the same tokens: fixed-point noise only
    assert summary["vs_emulation"]["logits_rel_l2_max"] < 0.08, summary["vs_emulation"]
    # the run went through the decoding steps, each on a cache bucket
    assert [c["kind"] for c in summary["steps"]] == ["prompt"] + ["step"] * 15
    assert summary["seconds_per_token"] > 0 and summary["bytes_per_token"] > 0


@pytest.mark.parametrize("which", ["tiny", "small"])
def test_puma_greedy_tokens_equal_plaintext_fp32(which, request):
    model = request.getfixturevalue(which)
    summary = gen.run_generation(model, "puma", PROMPT, 16, model_name=which)
    _assert_secure_follows(summary["plaintext_tokens"], "vs_plaintext", summary)
    assert summary["vs_emulation"]["logits_rel_l2_max"] < 0.01, summary["vs_emulation"]


def test_the_cache_is_never_reconstructed(tiny, monkeypatch):
    """Only the logits (the client's output) are reconstructed; each party holds AShares of
    the cache whose own components are not the values, and the three together are the
    emulation's cache."""
    reconstructed = []
    real = gen.reconstruct

    def recording(shares):
        reconstructed.append(shares[0].shape)
        return real(shares)

    monkeypatch.setattr(gen, "reconstruct", recording)
    g = gen.SecureGenerator(tiny, "ditto", model_name="tiny-gpt2")
    g.generate(PROMPT, 4)
    assert reconstructed == [(1, 512)] * 4  # the logits of each new token, nothing else
    parties = g.last_parties
    assert all(isinstance(s, AShare) for p in parties for s in p.keys + p.values)
    assert {p.filled for p in parties} == {len(PROMPT) + 3}
    # the test (not the code) opens the cache: the emulation's keys, which no party holds alone
    opened = reconstruct([p.keys[0] for p in parties])[0, : parties[0].filled]
    ring = parties[0].keys[0].ring
    own = parties[0].keys[0].components[0, : parties[0].filled, ..., 0]
    assert not np.array_equal(own, ring.encode(opened).astype(own.dtype))
    assert np.abs(opened).max() > 0.05  # real keys, not zeros
    # the cache's keys of the prompt are the emulated prompt pass's, up to fixed-point noise:
    # at FXP32[f=8] these keys (|k| ~ 0.15, ~40 ulps) carry a few ulps of SPU's truncation
    # noise (measured 6.8 % relative); another layer's or slot's keys would be ~100 % off
    _, keys, _ = _emulated_prompt_pass(tiny, load_mode("ditto"))
    want = keys[0][0, : len(PROMPT)]
    assert np.linalg.norm(opened[: len(PROMPT)] - want) < 0.12 * np.linalg.norm(want)
    other = keys[1][0, : len(PROMPT)]
    assert np.linalg.norm(opened[: len(PROMPT)] - other) > 0.5 * np.linalg.norm(other)


def _emulated_prompt_pass(model, mode):
    from ditto_spu.quant import emulate

    return emulate(decoding.prompt_function(model, mode)).evaluate(
        prepare_params(model.params, mode), *decoding.prompt_inputs(model, mode, PROMPT, 16))


def test_the_cache_moves_up_a_bucket(tiny):
    """A prompt of 14 tokens and 4 new ones: the steps run on 16 slots, then on 32 (the
    cache padded with zero shares), and the tokens still follow the emulation."""
    prompt = list(range(20, 34))
    g = gen.SecureGenerator(tiny, "ditto", model_name="tiny-gpt2", buckets=(16, 32, 64))
    result = g.generate(prompt, 4)
    assert [(c.kind, c.slots) for c in result.costs] == [("prompt", 16), ("step", 16), ("step", 16), ("step", 32)]
    assert g.last_parties[0].slots == 32
    _, forced = gen.emulated_generation(tiny, "ditto", None, prompt, 4, buckets=(16, 32, 64),
                                        forced_tokens=result.tokens)
    flips = gen.agreement(result.tokens, result.logits, forced)
    assert flips["logits_rel_l2_max"] < 0.08 and not flips["greedy_flips"], flips


def test_bad_requests_get_clear_errors(tiny):
    with pytest.raises(DittoError, match="prompt is empty"):
        gen.check_generation_request(tiny, [], 4)
    with pytest.raises(DittoError, match="positions"):
        gen.check_generation_request(tiny, [1] * 60, 8)
    with pytest.raises(DittoError, match="vocabulary"):
        gen.check_generation_request(tiny, [1, 600], 2)
    with pytest.raises(DittoError, match="prompt is empty"):
        gen.prompt_token_ids("tiny-gpt2", tiny, "   ")
    assert gen.check_generation_request(tiny, [1] * 60, 5) == [1] * 60  # 60 + 5 − 1 = 64 positions


def test_buckets_and_sampler():
    assert gen.buckets_for(64) == (16, 32, 64)
    assert gen.buckets_for(100) == (16, 32, 64, 100)
    assert gen.bucket_for(17, (16, 32)) == 32
    logits = np.array([0.1, 2.0, 1.9, -1.0])
    assert gen.Sampler()(logits) == 1
    picks = {gen.Sampler(temperature=1.0, top_k=2, seed=s)(logits) for s in range(30)}
    assert picks == {1, 2}  # top-k keeps the two best, sampling reaches both


def test_generate_command_json(capsys):
    from ditto_spu.cli.main import main

    rc = main(["generate", "--model", "tiny-gpt2", "--prompt-ids", "5,17,300", "--max-new-tokens", "3", "--json"])
    assert rc == 0
    out = __import__("json").loads(capsys.readouterr().out)
    for key in ("tokens", "emulation_tokens", "plaintext_tokens", "seconds_per_token", "bytes_per_token"):
        assert key in out, key
    assert len(out["tokens"]) == 3 and out["prompt_tokenization"] == "given ids"
    assert main(["generate", "--model", "tiny-gpt2", "--prompt-ids", "5", "--max-new-tokens", "99"]) == 2
