"""``ditto-spu node`` and ``ditto-spu run``: a three-node deployment's node and driver."""

from __future__ import annotations

import json

from ..errors import DittoError


def run_node(args) -> int:
    from ..distributed.config import load_config
    from ..distributed.node import serve

    return serve(load_config(args.config), args.rank, max_jobs=args.max_jobs, store=args.store)


def run_driver(args) -> int:
    from ..distributed.config import load_config

    config = load_config(args.config)
    if args.demo_plan:
        from ..distributed.models import run_demo_plan

        report = run_demo_plan(config)
    else:
        from ..distributed.models import run_model_on_nodes

        if not args.model:
            raise DittoError("give --model NAME|DIR (or --demo-plan for the small hand-built plan)")
        report = run_model_on_nodes(config, args.model, args.mode, args.text, seq_len=args.seq_len,
                                    policy=args.policy)
    print(json.dumps(report, indent=2, default=float))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("node", help="run one party of a three-node deployment")
    p.add_argument("--config", required=True, help="deployment config, e.g. configs/3pc.json")
    p.add_argument("--rank", type=int, required=True, help="this node's index in the config (0, 1, 2)")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.add_argument("--store", default=None, help="directory of this node's uploaded weight shares "
                   "(default: the config's nodes[rank].store, else ~/.cache/ditto-spu/node{rank})")
    p.set_defaults(func=run_node)

    p = sub.add_parser("run", help="one-process convenience: hold model and input, share both, run once "
                       "(the service is upload + query)")
    p.add_argument("--config", required=True)
    p.add_argument("--demo-plan", action="store_true", help="run the small hand-built mixed-ring plan")
    p.add_argument("--model", default=None)
    p.add_argument("--mode", default="ditto")
    p.add_argument("--input", "--text", dest="text", default=None, help="input text")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--policy", default=None)
    p.set_defaults(func=run_driver)
