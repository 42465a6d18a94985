"""Cost categories of a Transformer's ops, from jax's name scopes.

A benchmark compiles the model with ``split_by=split_by_category``: ops of different
categories land in different segments (named ``seg{i}_{category}``), so SPU's per-segment
profile gives bytes, send actions and time per category exactly; ring-cast kernel steps
form the category ``casts``. The rule (first match wins), on the ``/``-separated parts
of an op's scope (e.g. ``encoder/layer/0/attention/self/softmax_puma/exp``):

============  ==========================================================================
embedding     inside the embedding stage: ``embeddings`` (BERT, its LayerNorm included),
              ``wte`` / ``wpe`` (GPT-2), or the one-hot matmul ``embed_one_hot``
softmax       a part starting with ``softmax`` (the mode's softmax scope: max, cut-off,
              exp, sum, division, the mask bias)
gelu          a part starting with ``gelu`` (the mode's GeLU scope)
layernorm     a part ``LayerNorm`` / ``ln_*`` / ``layer_norm``
linear        a projection (``query``, ``key``, ``value``, ``dense``, ``c_attn``,
              ``c_proj``, ``c_fc``, ``q_attn``, ``lm_head``: matmul + bias) or the rest of
              the attention block (``self`` / ``attn``: 1/√d scaling, score and context
              matmuls, head reshapes); any other ``dot_general``
other         everything else: residual adds, reshapes between blocks, glue
casts         (not a scope) ring-cast kernel steps
============  ==========================================================================
"""

from __future__ import annotations

CATEGORIES = ("embedding", "linear", "softmax", "gelu", "layernorm", "casts", "other")

_EMBEDDING_PARTS = frozenset({"embeddings", "wte", "wpe", "embed_one_hot"})
_LINEAR_PARTS = frozenset(
    {"query", "key", "value", "dense", "c_attn", "c_proj", "c_fc", "q_attn", "lm_head", "self", "attn"}
)
_LAYERNORM_PARTS = frozenset({"LayerNorm", "layer_norm", "layernorm"})


def categorize(scope: str, op_name: str = "") -> str:
    """The category of an op with jax name scope ``scope`` and op name ``op_name``
    (e.g. ``"stablehlo.dot_general"``); never ``"casts"`` (see the module docstring)."""
    parts = [p for p in scope.split("/") if p]
    if any(p in _EMBEDDING_PARTS for p in parts):
        return "embedding"
    if any(p.startswith("softmax") for p in parts):
        return "softmax"
    if any(p.startswith("gelu") for p in parts):
        return "gelu"
    if any(p in _LAYERNORM_PARTS or p.startswith("ln_") for p in parts):
        return "layernorm"
    if any(p in _LINEAR_PARTS for p in parts) or op_name == "stablehlo.dot_general":
        return "linear"
    return "other"


def split_by_category(node) -> str:
    """``split_by`` for :func:`ditto_spu.frontend.compile`: the category of a graph node."""
    return categorize(node.location.scope, node.op_name)


def step_category(step_name: str, kind: str) -> str:
    """Category of a plan step from its name and kind alone: ``seg{i}_{category}``
    segments; every other step (a ring cast) ``casts``; an unlabelled segment ``other``.
    :func:`step_categories` is exact for kernel calls too; this is its fallback."""
    if kind != "segment":
        return "casts"
    _, sep, label = step_name.partition("_")
    return label if sep and label in CATEGORIES else "other"


def step_categories(program) -> dict:
    """``{step name: (category, component)}`` for every step of a compiled
    :class:`~ditto_spu.frontend.Program` (compiled with ``split_by=split_by_category``):

    * a segment: the category in its name, component = category;
    * a ring cast: ``casts``, component = the category of the cast's own scope (e.g.
      ``softmax`` for Ditto's softmax up-cast, ``other`` for residual-stream casts);
    * any other kernel step (e.g. an FXP32 matmul run by ditto-spu's own protocol): the
      category of the op it replaces (a matmul: ``linear``), component = its kernel.
    """
    from ditto_spu.plan import KernelStep, Segment

    graph = program.compiled.graph
    vid_of = {name: vid for vid, name in program.compiled.emitted.names.items()}

    def producer_node(var_name):
        vid = vid_of.get(var_name)
        if vid is None or graph.values[vid].producer is None:
            return None
        return graph.nodes[graph.values[vid].producer]

    out = {}
    for step in program.plan.steps:
        if isinstance(step, Segment):
            cat = step_category(step.name, "segment")
            out[step.name] = (cat, cat)
            continue
        node = producer_node(step.writes[0]) if step.writes else None
        scope = node.location.scope if node is not None else ""
        if isinstance(step, KernelStep):
            out[step.name] = ("casts", categorize(scope, ""))
        else:
            cat = categorize(scope, node.op_name if node is not None else "")
            out[step.name] = (cat, getattr(step, "kernel", type(step).__name__))
    return out
