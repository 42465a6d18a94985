"""GPT-2 generation on three nodes, the key/value cache kept at the nodes in a session (issue 16).

One deployment (three node processes) is shared by the tests of this module; the owner
uploads tiny-gpt2 for generation (a `ditto-spu upload --task generate` process).
"""

import json
import os
import time

import numpy as np
import pytest

from ditto_spu.distributed.config import load_config
from ditto_spu.distributed.driver import shutdown
from ditto_spu.errors import DittoError
from ditto_spu.shares import AShare

from .nodes import Nodes, write_config
from .test_service import cli, rel_l2

PROMPT = [5, 17, 300, 42, 7, 11, 250, 3]
NEW_TOKENS = 10  # steps at positions 8..16: the cache moves from the 16-slot bucket to the 32-slot one
BUCKETS = (16, 32)
# fixed-point noise between two secure runs of the same plans (SPU's random truncations):
# measured relative L2 of the nodes' logits to the simulator's at most 0.0087 per step.
# tests/test_generate.py's 0.08 (secure vs emulation) is too loose here: a node that does
# not write a step's new keys/values into its cache gave 0.018 at the third step and 0.07
# at the tenth, with the same greedy tokens (tiny-gpt2's random weights attend almost
# uniformly); 0.02 catches it
NOISE = 0.02


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generation")
    path = write_config(tmp, queue_timeout_s=120)
    with Nodes(path, log_dir=str(tmp)) as nodes:
        nodes.wait_ready()
        up = cli("upload", "--config", path, "--model", "tiny-gpt2", "--mode", "ditto", "--task", "generate",
                 "--prompt-buckets", "16", "--step-buckets", "16,32", "--model-id", "tiny-gen", "--json", timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        yield {"path": path, "config": load_config(path), "nodes": nodes, "tmp": str(tmp),
               "upload": json.loads(up.stdout)}
        shutdown(load_config(path))


@pytest.fixture(scope="module")
def simulated(deployment):
    """SecureGenerator on the simulator: same model, mode, policy, rings and buckets."""
    from ditto_spu.generate import SecureGenerator
    from ditto_spu.simulation import Simulator

    config = deployment["config"]
    gen = SecureGenerator("tiny-gpt2", "ditto", config.policy_object(), buckets=BUCKETS,
                          simulator=Simulator(options=config.spu))
    return gen.generate(PROMPT, NEW_TOKENS)


def _log(deployment, rank):
    return open(os.path.join(deployment["tmp"], f"node{rank}.log")).read()


def test_generation_on_the_nodes_gives_the_simulators_tokens(deployment, simulated):
    assert deployment["upload"]["plans"] == ["prompt16", "step16", "step32"]
    out = cli("generate", "--config", deployment["path"], "--model-id", "tiny-gen", "--prompt-ids",
              ",".join(map(str, PROMPT)), "--max-new-tokens", str(NEW_TOKENS), "--json", "--logits", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert len(result["tokens"]) == NEW_TOKENS
    assert result["tokens"] == simulated.tokens, (result["tokens"], simulated.tokens)
    errors = [rel_l2(a, b) for a, b in zip(result["logits"], simulated.logits)]
    assert max(errors) < NOISE, errors
    kinds = [(p["kind"], p["slots"]) for p in result["steps"]]
    assert kinds == [("prompt", 16)] + [("step", 16)] * 8 + [("step", 32)], kinds
    assert result["seconds_per_token"] > 0
    for rank in range(3):  # every node closed the session and freed its shares
        assert f"session {result['session_id']} closed: freed" in _log(deployment, rank)


def _walk(x, found: list):
    if isinstance(x, AShare):
        found.append(x)
    elif isinstance(x, dict):
        for v in x.values():
            _walk(v, found)
    elif isinstance(x, (list, tuple)):
        for v in x:
            _walk(v, found)


def test_the_cache_shares_never_reach_the_client(deployment, monkeypatch):
    """Every message the client receives during a generation: the only shares in them are
    the logits (one (1, vocab) share per node and pass); no key/value share ever arrives."""
    from ditto_spu.distributed import driver, service
    from ditto_spu.distributed.generation import GenerationClient

    received: list = []
    for module in (driver, service):
        original = module.recv_message

        def recording(conn, *, _original=original, **kwargs):
            msg = _original(conn, **kwargs)
            received.append(msg)
            return msg

        monkeypatch.setattr(module, "recv_message", recording)
    result = GenerationClient(deployment["config"]).generate("tiny-gen", PROMPT[:3], 4)
    assert len(result.tokens) == 4
    results = [m for m in received if m["type"] == "result"]
    assert len(results) == 3 * 4
    meta = GenerationClient(deployment["config"]).model_info("tiny-gen")
    logits_names = {p["outputs"]["logits"] for p in meta["plans"].values()}
    shares: list = []
    for m in received:
        _walk(m, shares)
    assert len(shares) == 3 * 4
    assert all(s.shape == (1, meta["vocab_size"]) for s in shares), [s.shape for s in shares]
    assert all(set(m["outputs"]) <= logits_names and len(m["outputs"]) == 1 for m in results)


def test_closing_and_expiry_free_the_session(deployment):
    from ditto_spu.distributed import generation
    from ditto_spu.distributed.service import Client
    from ditto_spu.models.decoding import prompt_inputs

    client = Client(deployment["config"])
    meta = client.model_info("tiny-gen")
    pm = meta["plans"]["prompt16"]
    shim = type("M", (), {"config": type("C", (), {"vocab_size": meta["vocab_size"]})})

    def prompt_pass(session_id):
        inputs = dict(zip(pm["client_inputs"].values(), prompt_inputs(shim, "ditto", PROMPT, 16)))
        keep = {out: {"var": f"{kind[0]}{layer}", "slot": 0, "count": len(PROMPT)}
                for kind in ("keys", "values") for layer, out in enumerate(pm["outputs"][kind])}
        logits, _ = generation.run_pass(client, meta, session_id, 0, "prompt16", inputs, {}, keep)
        return logits

    # closed: every node frees the cache shares it held (2 layers × keys and values,
    # 16 slots × 4 heads × 16 dims, two ring words each)
    session_id = generation.open_session(client, meta, ttl_s=60)
    prompt_pass(session_id)
    replies = generation.close_session(client, meta, session_id)
    expected = 2 * 2 * 16 * 4 * 16 * 2 * 4  # FXP32 cache
    assert [r["freed_bytes"] for r in replies] == [expected] * 3, replies
    with pytest.raises(DittoError, match="no session"):
        generation.close_session(client, meta, session_id)
    # expired: a session unused for its ttl is dropped by every node; its next step is refused
    session_id = generation.open_session(client, meta, ttl_s=1)
    prompt_pass(session_id)
    time.sleep(2.5)
    for rank in range(3):
        assert f"session {session_id} expired (unused for its ttl): freed" in _log(deployment, rank)
    with pytest.raises(DittoError, match="no session"):
        prompt_pass(session_id)


def test_a_generation_model_refuses_single_queries_and_vice_versa(deployment):
    from ditto_spu.distributed.generation import GenerationClient

    with pytest.raises(DittoError, match="uploaded for generation"):
        GenerationClient(deployment["config"]).query("tiny-gen", "a sentence")
    with pytest.raises(DittoError, match="exceed the largest uploaded bucket 32"):
        GenerationClient(deployment["config"]).generate("tiny-gen", PROMPT, 30)


def test_session_store_bounds_order_and_local_writes():
    """The node's session logic on its own (no MPC): feed pads with zero shares, keep
    writes the slots, steps come in order, the memory bound and the ttl hold."""
    from ditto_spu.distributed.sessions import SessionError, SessionStore
    from ditto_spu.plan import InputBinding, OutputBinding, Plan, VarInfo
    from ditto_spu.rings import RingSpec

    ring = RingSpec.parse("FXP32[f=10]")
    cache_in = VarInfo(ring, (1, 8, 2, 3), "float16")
    new_out = VarInfo(ring, (1, 1, 2, 3), "float16")
    plan = Plan(steps=[], inputs=[InputBinding("w", VarInfo(ring, (3,), "float16")), InputBinding("cache", cache_in)],
                outputs=[OutputBinding("logits", VarInfo(ring, (1, 5), "float16")), OutputBinding("new", new_out)],
                variables={})
    now = [0.0]
    store = SessionStore(0, max_bytes=1000, clock=lambda: now[0])
    session = store.open("s" * 16, "m", "u", ttl_s=10)
    rng = np.random.default_rng(0)
    first = AShare(ring, (1, 4, 2, 3), "float16", rng.integers(0, 2**32, (1, 4, 2, 3, 2), dtype=np.uint32))
    session.vars["k"] = first
    spec = {"id": "s" * 16, "step": 0, "plan": "p", "feed": {"cache": "k"}, "keep": {"new": {"var": "k", "slot": 4, "count": 1}}}
    prepared = store.prepare(spec, "m", "u", plan, {"w": None})
    assert prepared.inputs["cache"].shape == (1, 8, 2, 3)
    assert not prepared.inputs["cache"].components[:, 4:].any()  # zero shares
    new = AShare(ring, (1, 1, 2, 3), "float32", rng.integers(0, 2**32, (1, 1, 2, 3, 2), dtype=np.uint32))
    logits = AShare(ring, (1, 5), "float32", np.zeros((1, 5, 2), np.uint32))
    sent = store.commit(prepared, {"logits": logits, "new": new})
    assert list(sent) == ["logits"]  # the kept output is not sent
    k = session.vars["k"]
    assert k.shape == (1, 8, 2, 3)
    assert np.array_equal(k.components[:, :4], first.components)
    assert np.array_equal(k.components[:, 4], new.components[:, 0])
    assert not k.components[:, 5:].any()
    with pytest.raises(SessionError, match="expects step 1"):
        store.prepare(spec, "m", "u", plan, {"w": None})
    big = dict(spec, step=1, keep={"new": {"var": "k", "slot": 40, "count": 1}})
    with pytest.raises(SessionError, match="over its bound"):
        store.prepare(big, "m", "u", plan, {"w": None})
    now[0] = 11.0
    assert store.expire() == [("s" * 16, k.nbytes)] and len(store) == 0
