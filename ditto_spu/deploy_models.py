"""`ditto-spu run --model ...`: one secure inference on a three-node deployment."""

from __future__ import annotations


def run_model_on_nodes(config, args) -> dict:
    from .distributed.driver import NodesRunner
    from .infer import secure_inference

    if not args.model:
        raise SystemExit("ditto-spu run: give --model (or --demo-plan)")
    result = secure_inference(
        args.model,
        args.mode,
        args.text or "Secure inference keeps both the model and the input private.",
        seq_len=args.seq_len,
        policy=args.policy or config.policy_object(),
        emulate=False,
        runner=NodesRunner(config),
    )
    return result.summary()
