"""GPT-2 generation on the three-node deployment, the key/value cache kept at the nodes.

* **model owner** — :func:`upload_generation_model` compiles the plans a generation needs
  (:class:`~ditto_spu.generate.SecureGenerator`'s: a prompt pass per prompt bucket, a
  decoding step per cache bucket), checks that every plan binds the weights alike (same
  names, rings and shapes: one set of weight shares serves them all; refused otherwise),
  shares the weights once and uploads them with all the plans under one model id.
  Default buckets: prompts of 16 and 32 slots, steps over 16, 32 and 64 cache slots (those
  within the model's positions). The trade-off: each bucket is one compilation at upload
  (tiny-gpt2: a few seconds each; GPT-2 base: tens of seconds) and one plan per node,
  against what a generation may do: prompts up to the largest prompt bucket and
  prompt + new tokens up to the largest step bucket (more is refused, with the limits).
* **client** — :class:`GenerationClient` (``.generate``; :func:`generate`): opens a session on the three nodes
  (``open_session``), runs the prompt pass and one decoding step per new token as session
  queries: the client shares only its own inputs (the token and position one-hots, the
  masks), each node feeds its own key/value cache shares from the session and keeps the
  pass's new keys / values there (written into slot t at the node, on its own shares;
  a cache moving up a bucket is padded with zero shares at the node), and only the logits
  come back; the client reconstructs them and picks the token. ``close_session`` at the
  end (also after a failure); a client that disappears leaves the session to expire after
  its ``ttl_s``.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np

from ..errors import DittoError
from ..shares import reconstruct
from .config import DeploymentConfig
from .driver import _connect, run_admitted, stats_of
from .service import PROTOCOL, Client, UploadResult, _reply, _share_client_inputs, send_upload
from .store import check_model_id
from .wire import send_message

PROMPT_BUCKETS = (16, 32)
STEP_BUCKETS = (16, 32, 64)
DEFAULT_TTL_S = 300.0


def _bindings(plan, names) -> dict:
    infos = {b.name: b.info for b in plan.inputs}
    return {n: {"ring": str(infos[n].ring), "shape": list(infos[n].shape), "dtype": infos[n].dtype} for n in names}


def upload_generation_model(config: DeploymentConfig, model, mode: str = "ditto", *,
                            prompt_buckets: Sequence[int] = PROMPT_BUCKETS, step_buckets: Sequence[int] = STEP_BUCKETS,
                            policy=None, model_id: Optional[str] = None, model_name: Optional[str] = None, rng=None,
                            connect_timeout_s: float = 30.0, progress=None) -> UploadResult:
    """Compile the generation plans of a GPT-2 LM ``model`` (object or name) under
    ``mode`` and upload its weight shares and the plans to the three nodes under
    ``model_id``. Needs the owner's key; ``policy`` defaults to the config's."""
    import jax

    from ..generate import SecureGenerator
    from ..models import load_model
    from ..policy import load_policy

    say = progress or (lambda message: None)
    if isinstance(model, str):
        model_name = model_name or model
        say(f"loading {model_name}")
        model = load_model(model)
    from transformers import FlaxGPT2LMHeadModel

    if not isinstance(model, FlaxGPT2LMHeadModel):
        raise DittoError(f"generation needs a GPT-2 language model (FlaxGPT2LMHeadModel), got {type(model).__name__}: "
                         "upload other models without --task generate")
    model_name = model_name or type(model).__name__
    model_id = check_model_id(model_id or model_name)
    n_pos = int(model.config.n_positions)
    prompts = sorted({int(b) for b in prompt_buckets if 0 < int(b) <= n_pos}) or [min(16, n_pos)]
    steps = sorted({int(b) for b in step_buckets if 0 < int(b) <= n_pos}) or [n_pos]
    if max(prompts) > max(steps):
        raise DittoError(f"prompt bucket {max(prompts)} exceeds the largest step bucket {max(steps)}: a step could "
                         "not take the prompt's cache")
    policy_obj = load_policy(policy or config.policy_object())
    gen = SecureGenerator(model, mode, policy_obj, model_name=model_name, progress=say,
                          buckets=sorted(set(prompts) | set(steps)))
    t0 = time.perf_counter()
    kinds = {f"prompt{s}": ("prompt", s) for s in prompts}
    kinds.update({f"step{s}": ("step", s) for s in steps})
    compiled = {name: gen._compile(kind, slots) for name, (kind, slots) in kinds.items()}
    compile_s = time.perf_counter() - t0
    layers = int(model.config.n_layer)
    first_name, first = next(iter(compiled.items()))
    n_params = first.param_leaves
    weight_names = list(first.program.input_names[:n_params])
    weight_infos = _bindings(first.program.plan, weight_names)
    plans_meta = {}
    for name, c in compiled.items():
        program = c.program
        names = list(program.input_names)
        if names[:n_params] != weight_names or program.arg_paths[:n_params] != first.program.arg_paths[:n_params]:
            raise DittoError(f"plans {first_name!r} and {name!r} name the weights differently; one upload of the "
                             "weight shares cannot serve both")
        infos = _bindings(program.plan, weight_names)
        for w in weight_names:
            if infos[w] != weight_infos[w]:
                raise DittoError(
                    f"plans {first_name!r} and {name!r} bind weight {w!r} ({program.arg_paths[names.index(w)]}) as "
                    f"{weight_infos[w]} and {infos[w]}: the weight shares must be the same across the plans (give the "
                    "policy one ring for it)"
                )
        rest = names[n_params:]
        outs = list(program.output_names)
        kind, slots = kinds[name]
        if kind == "prompt":
            client = dict(zip(("word_one_hot", "attention_mask", "last_selector"), rest))
            cache: dict = {"keys": [], "values": []}
            if len(rest) != 3:
                raise DittoError(f"plan {name!r} takes {len(rest)} client inputs, expected 3")
        else:
            client = dict(zip(("word_one_hot", "position_one_hot", "past_mask"), rest[:3]))
            cache = {"keys": rest[3:3 + layers], "values": rest[3 + layers:]}
            if len(rest) != 3 + 2 * layers:
                raise DittoError(f"plan {name!r} takes {len(rest)} non-weight inputs, expected {3 + 2 * layers}")
        if len(outs) != 1 + 2 * layers:
            raise DittoError(f"plan {name!r} has {len(outs)} outputs, expected logits and {2 * layers} keys/values")
        plans_meta[name] = {
            "kind": kind, "slots": slots,
            "client_inputs": client, "cache_inputs": cache,
            "input_bindings": _bindings(program.plan, list(client.values())),
            "outputs": {"logits": outs[0], "keys": outs[1:1 + layers], "values": outs[1 + layers:]},
        }
    upload_id = secrets.token_hex(8)
    meta = {
        "protocol": PROTOCOL, "task": "generate", "model_id": model_id, "upload_id": upload_id,
        "model": model_name, "mode": gen.mode.name, "vocab_size": int(model.config.vocab_size),
        "n_positions": n_pos, "n_layer": layers, "prompt_buckets": prompts, "step_buckets": steps,
        "plans": plans_meta, "weights": weight_names, "client_inputs": {}, "outputs": ["logits"],
        "rings": sorted({str(r) for c in compiled.values() for r in c.program.plan.rings}),
        "seq_len": max(steps), "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    say("secret-sharing the weights (once, for every plan)")
    t0 = time.perf_counter()
    from ..shares import share_plan_inputs

    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(gen.params)]
    per_party = share_plan_inputs(first.program.plan, dict(zip(weight_names, leaves)), rng, only=weight_names)
    share_s = time.perf_counter() - t0
    say(f"sending each node its weight shares and {len(compiled)} plans")
    t0 = time.perf_counter()
    plans_bytes = {name: c.program.plan.to_bytes() for name, c in compiled.items()}
    stored = send_upload(config, model_id, meta, plans_bytes[first_name], per_party, connect_timeout_s,
                         extra={"plans": plans_bytes})
    return UploadResult(model_id, upload_id, meta, compile_s, share_s, time.perf_counter() - t0, stored)


# ---- the client -------------------------------------------------------------------------------


@dataclasses.dataclass
class NodeGenerationResult:
    model_id: str
    prompt_ids: list
    tokens: list
    logits: list  # per new token, the reconstructed logits it was chosen from
    passes: list  # per pass: {kind, plan, slots, wall_s (client), node_wall_s, link_setup_s, bytes_sent, rounds}
    session_id: str

    @property
    def seconds_per_token(self) -> float:
        """Mean client-side wall time of a decoding step (the prompt pass's when only one token)."""
        steps = [p for p in self.passes if p["kind"] == "step"] or self.passes
        return float(np.mean([p["wall_s"] for p in steps]))

    def summary(self) -> dict:
        return {"model_id": self.model_id, "prompt_ids": self.prompt_ids, "tokens": self.tokens,
                "seconds_per_token": self.seconds_per_token, "prompt_pass": self.passes[0], "steps": self.passes,
                "session_id": self.session_id, "on": "nodes"}


class GenerationClient(Client):
    """A client of a deployment that also generates:
    ``GenerationClient(config).generate(model_id, prompt_ids, max_new_tokens)``."""

    def generate(self, model_id: str, prompt_ids: Sequence[int], max_new_tokens: int, sampler=None,
                 **kwargs) -> NodeGenerationResult:
        """See :func:`generate`."""
        return generate(self, model_id, prompt_ids, max_new_tokens, sampler, **kwargs)


def _bucket(n: int, buckets: Sequence[int], what: str) -> int:
    for b in buckets:
        if b >= n:
            return b
    raise DittoError(f"{n} {what} exceed the largest uploaded bucket {max(buckets)} (buckets {list(buckets)}); "
                     "upload the model with bigger buckets or ask for fewer tokens")


def _session_request(client, meta: dict, kind: str, extra: dict) -> list:
    """open_session / close_session on the three nodes; their replies."""
    replies = []
    for rank in range(3):
        with _connect(client.config, rank, client.connect_timeout_s, role="client") as conn:
            send_message(conn, {"type": kind, "rank": rank, "digest": client.config.digest,
                                "model_id": meta["model_id"], "upload_id": meta["upload_id"], **extra})
            replies.append(_reply(client.config, conn, rank, {"session" if kind == "open_session" else "closed"}, kind))
    return replies


def open_session(client, meta: dict, ttl_s: float = DEFAULT_TTL_S) -> str:
    session_id = secrets.token_hex(16)
    _session_request(client, meta, "open_session", {"session_id": session_id, "ttl_s": ttl_s})
    return session_id


def close_session(client, meta: dict, session_id: str) -> list:
    """Close the session on every node that still has it; the ``closed`` replies."""
    return _session_request(client, meta, "close_session", {"session_id": session_id})


def run_pass(client, meta: dict, session_id: str, step: int, plan_name: str, inputs: dict, feed: dict, keep: dict,
             rng=None) -> tuple:
    """One session query on the three nodes: (reconstructed logits, the nodes' results)."""
    plan_meta = meta["plans"][plan_name]
    shim = {"input_bindings": plan_meta["input_bindings"]}
    per_party = _share_client_inputs(shim, inputs, rng)
    conns = [_connect(client.config, rank, client.connect_timeout_s, role="client") for rank in range(3)]
    try:
        requests = [
            {"type": "query", "rank": r, "digest": client.config.digest, "model_id": meta["model_id"],
             "upload_id": meta["upload_id"], "query_id": f"{session_id[:8]}-{step}", "inputs": per_party[r],
             "session": {"id": session_id, "step": step, "plan": plan_name, "feed": feed, "keep": keep}}
            for r in range(3)
        ]
        results = run_admitted(client.config, conns, requests, f"generation step {step}")
    finally:
        for conn in conns:
            conn.close()
    name = plan_meta["outputs"]["logits"]
    for r, result in enumerate(results):
        if set(result["outputs"]) != {name}:
            raise DittoError(f"node {r} returned outputs {sorted(result['outputs'])}, expected only the logits {name!r}")
    logits = reconstruct([results[r]["outputs"][name] for r in range(3)])
    return np.asarray(logits, np.float64).ravel(), results


def generate(client, model_id: str, prompt_ids: Sequence[int], max_new_tokens: int, sampler=None, *,
             ttl_s: float = DEFAULT_TTL_S, rng=None, progress=None) -> NodeGenerationResult:
    """Generate ``max_new_tokens`` tokens after ``prompt_ids`` on the nodes (see the module
    docstring); greedy unless ``sampler`` (:class:`~ditto_spu.generate.Sampler`)."""
    from ..generate import Sampler, check_generation_request
    from ..models.decoding import prompt_inputs, step_inputs

    say = progress or (lambda message: None)
    meta = client.model_info(model_id)
    if meta.get("task") != "generate":
        raise DittoError(f"model {model_id!r} was uploaded for single queries, not for generation; upload a GPT-2 LM "
                         "model with `ditto-spu upload --task generate`")
    shim = SimpleNamespace(config=SimpleNamespace(vocab_size=meta["vocab_size"], n_positions=meta["n_positions"]))
    ids = check_generation_request(shim, prompt_ids, max_new_tokens)
    prompt_b, step_b = meta["prompt_buckets"], meta["step_buckets"]
    p_slots = _bucket(len(ids), prompt_b, "prompt tokens")
    if max_new_tokens > 1:
        _bucket(max(len(ids) + max_new_tokens - 1, p_slots), step_b, "cache slots")
    sampler = sampler or Sampler()
    session_id = open_session(client, meta, ttl_s)
    tokens: list = []
    all_logits: list = []
    passes: list = []
    try:
        # the prompt pass: the nodes keep its keys / values (the first len(ids) slots)
        name = f"prompt{p_slots}"
        pm = meta["plans"][name]
        values = prompt_inputs(shim, meta["mode"], ids, p_slots)
        inputs = dict(zip(pm["client_inputs"].values(), values))
        keep = {out: {"var": f"{kind[0]}{layer}", "slot": 0, "count": len(ids)}
                for kind in ("keys", "values") for layer, out in enumerate(pm["outputs"][kind])}
        say(f"prompt pass ({len(ids)} tokens in {p_slots} slots)")
        t0 = time.perf_counter()
        logits, results = run_pass(client, meta, session_id, 0, name, inputs, {}, keep, rng)
        passes.append(_pass_cost("prompt", name, p_slots, time.perf_counter() - t0, results))
        filled, cache_slots = len(ids), p_slots
        while True:
            token = sampler(logits)
            tokens.append(token)
            all_logits.append(logits)
            if len(tokens) == max_new_tokens:
                break
            slots = _bucket(max(filled + 1, cache_slots), step_b, "cache slots")
            name = f"step{slots}"
            pm = meta["plans"][name]
            values = step_inputs(shim, meta["mode"], token, filled, filled, slots)
            inputs = dict(zip(pm["client_inputs"].values(), values))
            feed = {inp: f"{kind[0]}{layer}" for kind in ("keys", "values")
                    for layer, inp in enumerate(pm["cache_inputs"][kind])}
            keep = {out: {"var": f"{kind[0]}{layer}", "slot": filled, "count": 1}
                    for kind in ("keys", "values") for layer, out in enumerate(pm["outputs"][kind])}
            say(f"step {len(tokens)}/{max_new_tokens - 1} (position {filled}, {slots} slots)")
            t0 = time.perf_counter()
            logits, results = run_pass(client, meta, session_id, len(passes), name, inputs, feed, keep, rng)
            passes.append(_pass_cost("step", name, slots, time.perf_counter() - t0, results))
            filled, cache_slots = filled + 1, slots
    finally:
        try:
            close_session(client, meta, session_id)
        except (DittoError, OSError) as e:  # e.g. a node restarted after a failure: it has no session
            say(f"closing the session: {e}")
    return NodeGenerationResult(model_id, ids, tokens, all_logits, passes, session_id)


def _pass_cost(kind: str, plan: str, slots: int, wall_s: float, results: list) -> dict:
    stats = stats_of(results, wall_s)
    return {"kind": kind, "plan": plan, "slots": slots, "wall_s": wall_s,
            "node_wall_s": max(r["wall_s"] for r in results), "link_setup_s": max(r["link_setup_s"] for r in results),
            "bytes_sent": list(stats.bytes_sent), "rounds": stats.rounds}
