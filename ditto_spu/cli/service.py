"""``ditto-spu upload`` (model owner) and ``ditto-spu query`` (client): secure inference
as a service on a three-node deployment (docs/deployment.md)."""

from __future__ import annotations

import json
import sys


def run_upload(args) -> int:
    from ..distributed.config import load_config
    from ..distributed.service import upload_model

    config = load_config(args.config)
    say = lambda m: print(f"ditto-spu upload: {m}", file=sys.stderr, flush=True)  # noqa: E731
    if args.task == "generate":
        from ..distributed.generation import upload_generation_model

        result = upload_generation_model(config, args.model, args.mode, prompt_buckets=_buckets(args.prompt_buckets),
                                         step_buckets=_buckets(args.step_buckets), policy=args.policy,
                                         model_id=args.model_id, progress=say)
    else:
        result = upload_model(config, args.model, args.mode, seq_len=args.seq_len, policy=args.policy,
                              model_id=args.model_id, progress=say)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    elif args.task == "generate":
        print(f"uploaded {summary['model']} ({summary['mode']}) for generation as model id {summary['model_id']!r} "
              f"(upload {summary['upload_id']}): plans {summary['plans']}, {summary['weights']} weights, "
              f"{summary['bytes_per_node'][0] / 1e6:.1f} MB of shares per node; compile {result.compile_s:.1f} s, "
              f"sharing {result.share_s:.1f} s, sending {result.send_s:.1f} s")
    else:
        print(f"uploaded {summary['model']} ({summary['mode']}, seq {summary['seq_len']}) as model id "
              f"{summary['model_id']!r} (upload {summary['upload_id']}): {summary['weights']} weights, "
              f"{summary['bytes_per_node'][0] / 1e6:.1f} MB of shares per node; compile {result.compile_s:.1f} s, "
              f"sharing {result.share_s:.1f} s, sending {result.send_s:.1f} s")
    return 0


def _buckets(text: str) -> list:
    from ..errors import DittoError

    try:
        return [int(b) for b in text.replace(",", " ").split()]
    except ValueError:
        raise DittoError(f"buckets {text!r}: expected integers, e.g. 16,32") from None


def run_query(args) -> int:
    import numpy as np

    from ..distributed.config import load_config
    from ..distributed.service import Client

    config = load_config(args.config)
    result = Client(config).query(args.model_id, args.text)
    summary = result.summary()
    if args.json:
        summary["output"] = result.output.tolist()
        print(json.dumps(summary, indent=2))
    else:
        t = result.times
        out = np.ravel(result.output)
        print(f"model {args.model_id!r}: output {list(result.output.shape)}, first values "
              f"{np.array2string(out[:6], precision=4)}")
        print(f"time: client start {t['client_start']:.2f} s, input sharing {t['input_sharing']:.3f} s, secure run "
              f"{t['secure_run']:.2f} s, reconstruction {t['reconstruction']:.3f} s, total {t['total']:.2f} s")
        print(f"bytes sent by the nodes {[round(b / 1e6, 2) for b in result.bytes_sent]} MB, by the client "
              f"{result.client_bytes_sent / 1e6:.2f} MB; rounds {result.rounds}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("upload", help="model owner: compile a model and upload its weight shares to the nodes")
    p.add_argument("--config", required=True, help="deployment config, e.g. configs/3pc.json")
    p.add_argument("--model", required=True, help="model name (tiny, minilm, ...) or directory")
    p.add_argument("--mode", default="ditto")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--policy", default=None, help="precision policy (default: the config's)")
    p.add_argument("--model-id", default=None, help="the id clients query (default: the model's name)")
    p.add_argument("--task", choices=("infer", "generate"), default="infer",
                   help="generate: a GPT-2 LM model for `ditto-spu generate --config` (prompt and step plans)")
    p.add_argument("--prompt-buckets", default="16,32", help="--task generate: prompt pass plans (slots)")
    p.add_argument("--step-buckets", default="16,32,64", help="--task generate: decoding step plans (cache slots)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_upload)

    p = sub.add_parser("query", help="client: one secure inference of an uploaded model")
    p.add_argument("--config", required=True)
    p.add_argument("--model-id", required=True)
    p.add_argument("--input", "--text", dest="text", required=True, help="input text")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_query)
