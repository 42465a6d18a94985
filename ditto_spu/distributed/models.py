"""One secure inference of a model on a three-node deployment (``ditto-spu run --model``)."""

from __future__ import annotations

DEFAULT_TEXT = "Secure inference keeps both the model and the input private."


def run_model_on_nodes(config, model: str, mode: str = "ditto", text=None, *, seq_len: int = 32,
                       policy=None) -> dict:
    """Compile ``model`` under ``mode`` and run it on the nodes of ``config`` (a loaded
    deployment config); the summary of :class:`~ditto_spu.infer.InferenceResult`.
    ``policy`` defaults to the config's."""
    from ..infer import secure_inference
    from .driver import NodesRunner

    result = secure_inference(
        model,
        mode,
        text or DEFAULT_TEXT,
        seq_len=seq_len,
        policy=policy or config.policy_object(),
        emulate=False,
        runner=NodesRunner(config),
    )
    return result.summary()


def run_demo_plan(config) -> dict:
    """The small hand-built mixed-ring plan (:mod:`ditto_spu.demo_plan`) on the nodes of
    ``config``: its relative L2 error to plaintext float64 and the run's statistics."""
    import numpy as np

    from ..demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
    from .driver import run_plan

    plan = build_mixed_ring_plan(low=config.low, high=config.high)
    inputs = demo_inputs()
    outputs, stats = run_plan(config, plan, inputs)
    expected = plaintext_reference(inputs)
    err = float(np.linalg.norm(outputs["y"] - expected) / np.linalg.norm(expected))
    return {"relative_l2_error": err, **stats.summary()}
