"""GPT-2 text generation under MPC, with the key/value cache kept in secret shares.

Roles (as in the deployment): the model owner secret-shares the weights once; the client
secret-shares its prompt and each next token, and alone reconstructs each step's logits
and picks the token; the three parties compute and, between steps, each keeps ITS OWN
shares of the weights and of every layer's keys and values (:class:`PartyState`). The
cache is never reconstructed: a step's new keys / values are plan outputs that stay with
the party that computed them, which writes them into the next free slot of its cache —
a local operation on its share components.

Plans (from :mod:`ditto_spu.models.decoding`): one prompt pass, then one decoding step per
new token. The step takes the cache as an input of a fixed number of slots C with a mask
of the filled ones, so one compiled step serves every position up to C; C grows through a
small set of buckets (powers of two up to the model's positions: 16, 32, 64, ...), the
cache being padded with zero shares (local) when it moves up. The trade-off: a step costs
attention over C slots, not over the t filled ones (at most 2× the work of an exact-length
step, and attention is a small part of a step), against one compilation per bucket
instead of one per length.

The three parties stay up for a whole generation (a simulator session: each party's link
and SPU runtimes live on, its weight shares are loaded into SPU once, not per step).
Time and bytes are measured per step (:class:`StepCost`); ``seconds_per_token`` and
``bytes_per_token`` average the decoding steps (the prompt pass is reported apart).

The comparisons: :func:`emulated_generation` runs the same prompt pass and steps in the
fixed-point emulator (:mod:`ditto_spu.quant`) with a plaintext cache of exact ring values
— what the secure run must compute; :func:`plaintext_generation` is the FP32 model.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import DittoError, PlanError
from .shares import WORLD_SIZE, AShare, pad_slots, reconstruct, share_values, write_slots

#: The smallest cache / prompt bucket; larger ones double up to the model's positions.
MIN_BUCKET = 16


def buckets_for(n_positions: int, smallest: int = MIN_BUCKET) -> tuple:
    """Powers of two from ``smallest`` up to ``n_positions`` (which is always the last)."""
    out = []
    b = smallest
    while b < n_positions:
        out.append(b)
        b *= 2
    out.append(n_positions)
    return tuple(out)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``n`` slots."""
    for b in buckets:
        if b >= n:
            return b
    raise DittoError(f"{n} slots exceed the largest bucket {buckets[-1]} (the model's positions)")


# ---- the client's choice of the next token ------------------------------------------------------


@dataclasses.dataclass
class Sampler:
    """Greedy (``temperature`` 0, the default) or sampling with a temperature and an
    optional top-k, seeded: the client's side, on the logits it reconstructed."""

    temperature: float = 0.0
    top_k: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise DittoError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise DittoError(f"top_k must be >= 1, got {self.top_k}")
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits, np.float64).ravel()
        if self.temperature == 0:
            return int(np.argmax(logits))
        z = logits / self.temperature
        if self.top_k is not None and self.top_k < z.size:
            cut = np.partition(z, -self.top_k)[-self.top_k]
            z = np.where(z >= cut, z, -np.inf)
        p = np.exp(z - z.max())
        return int(self._rng.choice(z.size, p=p / p.sum()))


def top2_margin(logits) -> float:
    """The gap between the two largest logits: how near greedy decoding is to a tie."""
    top = np.sort(np.asarray(logits, np.float64).ravel())[-2:]
    return float(top[1] - top[0])


# ---- what each party holds ----------------------------------------------------------------------


class PartyState:
    """One party's state of a generation session: its shares of the weights (shared once
    per (parameter, ring)) and of the key/value cache (one AShare per layer and kind).

    Nothing here is ever reconstructed; the session moves each party's own shares between
    its state and its plan inputs / outputs only.
    """

    def __init__(self, rank: int):
        self.rank = rank
        self.weights: dict = {}  # (parameter path, ring) -> AShare
        self.keys: list = []  # per layer: AShare (1, slots, heads, head_dim)
        self.values: list = []
        self.filled = 0

    @property
    def slots(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0

    def cache_bytes(self) -> int:
        return sum(s.nbytes for s in self.keys + self.values)

    def grow(self, slots: int) -> None:
        """Pad every layer's cache to ``slots`` slots with zero shares (a valid sharing of
        0, and masked out until written): local, no message."""
        self.keys = [pad_slots(s, slots) for s in self.keys]
        self.values = [pad_slots(s, slots) for s in self.values]

    def write(self, new_keys: Sequence[AShare], new_values: Sequence[AShare], count: int) -> None:
        """Write the first ``count`` positions of this pass's keys / values (this party's
        shares) into the next free slots."""
        start = self.filled
        for cache, new in ((self.keys, new_keys), (self.values, new_values)):
            for layer, share in enumerate(new):
                try:
                    cache[layer] = write_slots(cache[layer], share, start, count)
                except PlanError as e:
                    raise PlanError(f"party {self.rank}: layer {layer}'s new keys/values: {e}") from None
        self.filled = start + count


def _empty_cache(binding_infos, slots: int) -> list:
    return [
        AShare(info.ring, (info.shape[0], slots) + tuple(info.shape[2:]), info.dtype,
               np.zeros((info.shape[0], slots) + tuple(info.shape[2:]) + (2,), info.ring.dtype))
        for info in binding_infos
    ]


# ---- results ------------------------------------------------------------------------------------


@dataclasses.dataclass
class StepCost:
    """One secure pass: ``kind`` "prompt" or "step", its slots (prompt bucket or cache
    bucket), wall time of the secure run, bytes sent per party, rounds."""

    kind: str
    slots: int
    wall_s: float
    bytes_sent: list
    rounds: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class GenerationResult:
    model: str
    mode: str
    prompt_ids: list
    tokens: list  # the new token ids, in order
    logits: list  # per new token, the logits it was chosen from (the client's output)
    costs: list  # StepCost per pass: the prompt pass, then one per decoding step
    compile_s: dict  # plan name -> seconds
    cache_bytes_per_party: int  # at the end

    @property
    def decoding_costs(self) -> list:
        return [c for c in self.costs if c.kind == "step"]

    @property
    def seconds_per_token(self) -> float:
        """Mean wall time of a decoding step (the prompt pass apart); the prompt pass's when
        only one token was generated."""
        steps = self.decoding_costs or self.costs
        return float(np.mean([c.wall_s for c in steps]))

    @property
    def bytes_per_token(self) -> float:
        """Mean bytes sent by the busiest party per decoding step."""
        steps = self.decoding_costs or self.costs
        return float(np.mean([max(c.bytes_sent) for c in steps]))

    def cost_by_bucket(self) -> list:
        """Per (kind, slots): passes, mean wall time, mean bytes (busiest party), rounds."""
        groups: dict = {}
        for c in self.costs:
            groups.setdefault((c.kind, c.slots), []).append(c)
        return [
            {"kind": kind, "slots": slots, "passes": len(cs),
             "wall_s_mean": float(np.mean([c.wall_s for c in cs])),
             "bytes_max_party_mean": float(np.mean([max(c.bytes_sent) for c in cs])),
             "rounds": max(c.rounds for c in cs)}
            for (kind, slots), cs in groups.items()
        ]


# ---- the secure session -------------------------------------------------------------------------


@dataclasses.dataclass
class _Compiled:
    program: Any  # frontend.Program
    param_leaves: int
    layers: int
    compile_s: float


class SecureGenerator:
    """Secure greedy (or sampled) generation of a GPT-2 LM model under a mode, on the
    3-party simulator. Plans are compiled once per bucket and reused across calls."""

    def __init__(self, model, mode: str = "ditto", policy=None, *, model_name: Optional[str] = None,
                 buckets: Optional[Sequence[int]] = None, simulator=None, progress: Optional[Callable] = None):
        from .models import load_mode, load_model, prepare_params
        from .models.decoding import prompt_function, step_function
        from .policy import load_policy
        from .simulation import Simulator

        if isinstance(model, str):
            model_name = model_name or model
            model = load_model(model)
        self.model = model
        self.model_name = model_name or type(model).__name__
        self.mode = load_mode(mode)
        self.policy = load_policy(policy)
        self.params = prepare_params(model.params, self.mode)
        self.buckets = tuple(buckets) if buckets else buckets_for(model.config.n_positions)
        if self.buckets[-1] > model.config.n_positions:
            raise DittoError(f"bucket {self.buckets[-1]} exceeds the model's {model.config.n_positions} positions")
        self.simulator = simulator or Simulator()
        self._prompt_fn = prompt_function(model, self.mode)
        self._step_fn = step_function(model, self.mode)
        self._compiled: dict = {}
        self._say = progress or (lambda message: None)

    # -- compilation ------------------------------------------------------------------------------
    def _compile(self, kind: str, slots: int) -> _Compiled:
        import jax

        from .frontend import compile
        from .models.decoding import cache_shape, prompt_inputs, step_inputs

        key = (kind, slots)
        if key in self._compiled:
            return self._compiled[key]
        self._say(f"compiling the {kind} plan ({slots} slots)")
        low = self.mode.dtypes.low_dtype
        layers = self.model.config.n_layer
        if kind == "prompt":
            args = (self.params, *prompt_inputs(self.model, self.mode, [0], slots))
            fn = self._prompt_fn
        else:
            empty = tuple(np.zeros(cache_shape(self.model, slots), low) for _ in range(layers))
            args = (self.params, *step_inputs(self.model, self.mode, 0, 0, 0, slots), empty, empty)
            fn = self._step_fn
        t0 = time.perf_counter()
        program = compile(fn, *args, policy=self.policy)
        compiled = _Compiled(program, len(jax.tree_util.tree_leaves(self.params)), layers, time.perf_counter() - t0)
        self._compiled[key] = compiled
        return compiled

    # -- one pass ---------------------------------------------------------------------------------
    def _run(self, session, compiled: _Compiled, parties: list, client_values: list, cache: bool):
        """Run one pass: the owner shares weights the parties do not hold yet, the client
        shares ``client_values`` (the non-parameter, non-cache arguments), each party adds
        its own weight and cache shares; returns (logits, per-party new keys, new values, stats)."""
        program = compiled.program
        plan = program.plan
        bindings = {b.name: b for b in plan.inputs}
        names = program.input_names
        n_params, layers = compiled.param_leaves, compiled.layers
        param_names = names[:n_params]
        client_names = names[n_params:n_params + len(client_values)]
        cache_names = names[n_params + len(client_values):]
        if cache and len(cache_names) != 2 * layers:
            raise PlanError(f"the step plan takes {len(cache_names)} cache inputs, expected {2 * layers}")
        import jax

        # the model owner: each weight once per ring, into every party's state
        for name, path, leaf in zip(param_names, program.arg_paths[:n_params], jax.tree_util.tree_leaves(self.params)):
            info = bindings[name].info
            if (path, info.ring) not in parties[0].weights:
                for rank, share in enumerate(share_values(np.asarray(leaf, np.float64), info.ring, info.dtype)):
                    parties[rank].weights[(path, info.ring)] = share
        # the client: its inputs of this pass
        party_inputs: list = [{} for _ in range(WORLD_SIZE)]
        for name, value in zip(client_names, client_values):
            info = bindings[name].info
            value = np.asarray(value)
            if info.dtype.startswith(("float", "bfloat")):
                value = value.astype(np.float64)
            for rank, share in enumerate(share_values(value, info.ring, info.dtype)):
                party_inputs[rank][name] = share
        # each party: its own weight and cache shares
        for rank, state in enumerate(parties):
            for name, path in zip(param_names, program.arg_paths[:n_params]):
                party_inputs[rank][name] = state.weights[(path, bindings[name].info.ring)]
            if cache:
                for name, share in zip(cache_names, state.keys + state.values):
                    info = bindings[name].info
                    if share.ring != info.ring or share.shape != info.shape:
                        raise PlanError(
                            f"party {rank}: cache input {name} is {share.ring} {share.shape}, the step plan "
                            f"takes {info.ring} {info.shape}"
                        )
                    party_inputs[rank][name] = share
        # the weights stay loaded in each party's runtime for the next pass
        outputs, stats = session.run_shares(plan, party_inputs, keep=set(param_names))
        out_names = program.output_names
        logits_name, key_names, value_names = out_names[0], out_names[1:1 + layers], out_names[1 + layers:]
        # the client alone reconstructs its output, the logits
        logits = reconstruct([outputs[rank][logits_name] for rank in range(WORLD_SIZE)])
        new_keys = [[outputs[rank][n] for n in key_names] for rank in range(WORLD_SIZE)]
        new_values = [[outputs[rank][n] for n in value_names] for rank in range(WORLD_SIZE)]
        return logits, new_keys, new_values, stats

    # -- the session ------------------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, sampler: Optional[Sampler] = None,
                 ) -> GenerationResult:
        """Generate ``max_new_tokens`` tokens after ``prompt_ids`` on three parties that stay
        up for the whole session (:meth:`~ditto_spu.mpc.simulator.Simulator.session`)."""
        prompt_ids = check_generation_request(self.model, prompt_ids, max_new_tokens)
        sampler = sampler or Sampler()
        with self.simulator.session() as session:
            return self._generate(session, prompt_ids, max_new_tokens, sampler)

    def _generate(self, session, prompt_ids: list, max_new_tokens: int, sampler: Sampler) -> GenerationResult:
        from .models.decoding import prompt_inputs, step_inputs

        parties = [PartyState(rank) for rank in range(WORLD_SIZE)]
        costs, tokens, all_logits = [], [], []
        # the prompt pass
        p_slots = bucket_for(len(prompt_ids), self.buckets)
        prompt = self._compile("prompt", p_slots)
        self._say(f"prompt pass ({len(prompt_ids)} tokens in {p_slots} slots)")
        logits, new_keys, new_values, stats = self._run(
            session, prompt, parties, list(prompt_inputs(self.model, self.mode, prompt_ids, p_slots)), cache=False)
        costs.append(StepCost("prompt", p_slots, stats.wall_s, list(stats.bytes_sent), stats.rounds))
        out_infos = {b.name: b.info for b in prompt.program.plan.outputs}
        key_infos = [out_infos[n] for n in prompt.program.output_names[1:1 + prompt.layers]]
        for rank, state in enumerate(parties):
            state.keys = _empty_cache(key_infos, p_slots)
            state.values = _empty_cache(key_infos, p_slots)
            state.write(new_keys[rank], new_values[rank], len(prompt_ids))
        token = sampler(logits)
        tokens.append(token)
        all_logits.append(np.asarray(logits, np.float64).ravel())
        # the decoding steps: the token just chosen goes in at the next position
        while len(tokens) < max_new_tokens:
            filled = parties[0].filled
            slots = bucket_for(filled + 1, self.buckets)
            if slots != parties[0].slots:
                for state in parties:
                    state.grow(slots)
            step = self._compile("step", slots)
            self._say(f"step {len(tokens)}/{max_new_tokens - 1} (position {filled}, {slots} slots)")
            logits, new_keys, new_values, stats = self._run(
                session, step, parties, list(step_inputs(self.model, self.mode, token, filled, filled, slots)), cache=True)
            costs.append(StepCost("step", slots, stats.wall_s, list(stats.bytes_sent), stats.rounds))
            for rank, state in enumerate(parties):
                state.write(new_keys[rank], new_values[rank], 1)
            token = sampler(logits)
            tokens.append(token)
            all_logits.append(np.asarray(logits, np.float64).ravel())
        self.last_parties = parties  # the parties' final states (tests inspect what they hold)
        return GenerationResult(
            model=self.model_name, mode=self.mode.name, prompt_ids=list(prompt_ids), tokens=tokens,
            logits=all_logits, costs=costs,
            compile_s={f"{k}[{s}]": c.compile_s for (k, s), c in self._compiled.items()},
            cache_bytes_per_party=parties[0].cache_bytes(),
        )


def check_generation_request(model, prompt_ids, max_new_tokens: int) -> list:
    """The prompt ids as a list, or a DittoError saying what is wrong with the request."""
    n_positions, vocab = model.config.n_positions, model.config.vocab_size
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise DittoError("the prompt is empty: give at least one token (--prompt TEXT or --prompt-ids)")
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise DittoError(f"prompt ids {bad[:5]} are outside the vocabulary [0, {vocab})")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise DittoError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if len(ids) + max_new_tokens - 1 > n_positions:
        raise DittoError(
            f"a prompt of {len(ids)} tokens and {max_new_tokens} new tokens need {len(ids) + max_new_tokens - 1} "
            f"positions; the model has {n_positions}: use --max-new-tokens {n_positions - len(ids) + 1} or less"
        )
    return ids


# ---- the references -----------------------------------------------------------------------------


def emulated_generation(model, mode, policy, prompt_ids, max_new_tokens: int, *, buckets=None,
                        forced_tokens: Optional[Sequence[int]] = None) -> tuple[list, list]:
    """(tokens, logits) of greedy generation in the fixed-point emulation of the same mode,
    policy and buckets: the prompt pass and the steps with a plaintext cache of exact ring
    values. ``forced_tokens``: feed these tokens instead of the greedy ones (the emulation
    along another run's path, to compare its logits step by step)."""
    import jax

    from .models import load_mode, prepare_params
    from .models.decoding import cache_shape, prompt_function, prompt_inputs, step_function, step_inputs
    from .quant import emulate

    mode = load_mode(mode)
    ids = check_generation_request(model, prompt_ids, max_new_tokens)
    buckets = tuple(buckets) if buckets else buckets_for(model.config.n_positions)
    params = prepare_params(model.params, mode)
    low = mode.dtypes.low_dtype
    layers = model.config.n_layer
    prompt = emulate(prompt_function(model, mode), policy)
    step = emulate(step_function(model, mode), policy)
    p_slots = bucket_for(len(ids), buckets)
    logits, keys, values = prompt.evaluate(params, *prompt_inputs(model, mode, ids, p_slots))
    cache_k = [np.zeros(cache_shape(model, p_slots)) for _ in range(layers)]
    cache_v = [np.zeros(cache_shape(model, p_slots)) for _ in range(layers)]
    for layer in range(layers):
        cache_k[layer][:, : len(ids)] = keys[layer][:, : len(ids)]
        cache_v[layer][:, : len(ids)] = values[layer][:, : len(ids)]
    filled = len(ids)
    tokens, all_logits = [], []

    def choose(logits):
        token = int(np.argmax(logits)) if forced_tokens is None else int(forced_tokens[len(tokens)])
        tokens.append(token)
        all_logits.append(np.asarray(logits, np.float64).ravel())
        return token

    token = choose(logits)
    while len(tokens) < max_new_tokens:
        slots = bucket_for(filled + 1, buckets)
        if slots != cache_k[0].shape[1]:
            pad = ((0, 0), (0, slots - cache_k[0].shape[1]), (0, 0), (0, 0))
            cache_k = [np.pad(c, pad) for c in cache_k]
            cache_v = [np.pad(c, pad) for c in cache_v]
        client = step_inputs(model, mode, token, filled, filled, slots)
        signature = (params, *client, tuple(c.astype(low) for c in cache_k), tuple(c.astype(low) for c in cache_v))
        values_in = (jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params), *client,
                     tuple(cache_k), tuple(cache_v))
        logits, keys, values = step.evaluate_values(signature, values_in)
        for layer in range(layers):
            cache_k[layer][:, filled] = keys[layer][:, 0]
            cache_v[layer][:, filled] = values[layer][:, 0]
        filled += 1
        token = choose(logits)
    return tokens, all_logits


def plaintext_generation(model, prompt_ids, max_new_tokens: int, *,
                         forced_tokens: Optional[Sequence[int]] = None) -> tuple[list, list]:
    """(tokens, logits) of greedy generation by the FP32 model (the whole sequence each
    step, no cache); ``forced_tokens`` as in :func:`emulated_generation`."""
    seq = check_generation_request(model, prompt_ids, max_new_tokens)
    tokens, all_logits = [], []
    for i in range(max_new_tokens):
        logits = np.asarray(model(np.asarray([seq], np.int32)).logits[0, -1], np.float64)
        token = int(np.argmax(logits)) if forced_tokens is None else int(forced_tokens[i])
        tokens.append(token)
        all_logits.append(logits)
        seq.append(token)
    return tokens, all_logits


def prompt_token_ids(model_name: str, model, text: str) -> tuple[list, str]:
    """(ids, how): the model's tokenizer where it has one, else the word hash of
    :mod:`ditto_spu.models.tokens` (``how`` says which)."""
    from .models.tokens import has_tokenizer, tokenize

    if not isinstance(text, str) or not text.strip():
        raise DittoError("the prompt is empty: give some text (--prompt) or token ids (--prompt-ids)")
    ids, mask = tokenize(model_name, model, [text], model.config.n_positions)
    how = "tokenizer" if has_tokenizer(model_name) else "word-hash"
    return [int(i) for i in ids[0][mask[0] == 1]], how


# ---- one generation with its comparisons (``ditto-spu generate``) ------------------------------


def agreement(secure_tokens: Sequence[int], secure_logits: Sequence, reference_logits: Sequence) -> dict:
    """How a secure run agrees with a reference run along the SAME tokens (the reference
    forced onto the secure path): per step the logits' relative L2 error, and each step
    where the reference's greedy choice differs, with the reference's top-2 margin there
    (a near-tie that fixed-point noise can flip)."""
    rel = [float(np.linalg.norm(s - r) / max(np.linalg.norm(r), 1e-30)) for s, r in zip(secure_logits, reference_logits)]
    flips = [
        {"step": i, "secure": int(t), "reference": int(np.argmax(r)), "reference_margin": top2_margin(r),
         "secure_margin": top2_margin(s)}
        for i, (t, s, r) in enumerate(zip(secure_tokens, secure_logits, reference_logits))
        if int(np.argmax(r)) != int(t)
    ]
    return {"logits_rel_l2_max": max(rel), "logits_rel_l2_mean": float(np.mean(rel)), "greedy_flips": flips}


def run_generation(model, mode: str, prompt_ids: Sequence[int], max_new_tokens: int, *, policy=None,
                   model_name: Optional[str] = None, sampler: Optional[Sampler] = None, compare: bool = True,
                   progress: Optional[Callable] = None) -> dict:
    """Generate securely and, with ``compare``, run the references: the summary ``ditto-spu
    generate --json`` prints (tokens, emulation_tokens, plaintext_tokens, seconds_per_token,
    bytes_per_token, per-bucket costs, and the agreement along the secure path)."""
    say = progress or (lambda message: None)
    gen = SecureGenerator(model, mode, policy, model_name=model_name, progress=say)
    result = gen.generate(prompt_ids, max_new_tokens, sampler)
    summary = {
        "model": result.model,
        "mode": result.mode,
        "prompt_ids": result.prompt_ids,
        "tokens": result.tokens,
        "seconds_per_token": result.seconds_per_token,
        "bytes_per_token": result.bytes_per_token,
        "prompt_pass": result.costs[0].as_dict(),
        "cost_by_bucket": result.cost_by_bucket(),
        "steps": [c.as_dict() for c in result.costs],
        "compile_s": result.compile_s,
        "cache_bytes_per_party": result.cache_bytes_per_party,
        "buckets": list(gen.buckets),
    }
    if compare:
        say("fixed-point emulation (free-running greedy, and along the secure tokens)")
        summary["emulation_tokens"], _ = emulated_generation(gen.model, gen.mode, gen.policy, prompt_ids,
                                                             max_new_tokens, buckets=gen.buckets)
        _, forced = emulated_generation(gen.model, gen.mode, gen.policy, prompt_ids, max_new_tokens,
                                        buckets=gen.buckets, forced_tokens=result.tokens)
        summary["vs_emulation"] = agreement(result.tokens, result.logits, forced)
        say("plaintext FP32 model")
        summary["plaintext_tokens"], _ = plaintext_generation(gen.model, prompt_ids, max_new_tokens)
        _, forced = plaintext_generation(gen.model, prompt_ids, max_new_tokens, forced_tokens=result.tokens)
        summary["vs_plaintext"] = agreement(result.tokens, result.logits, forced)
    return summary
