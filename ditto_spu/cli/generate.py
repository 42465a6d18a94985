"""``ditto-spu generate``: GPT-2 text generation under MPC (:mod:`ditto_spu.generate`)."""

from __future__ import annotations

import json

import numpy as np

from ..errors import DittoError


def _prompt_ids(args, model) -> tuple[list, str]:
    from ..generate import prompt_token_ids

    if args.prompt_ids is not None:
        try:
            return [int(t) for t in args.prompt_ids.replace(",", " ").split()], "given ids"
        except ValueError:
            raise DittoError(f"--prompt-ids {args.prompt_ids!r}: expected integers, e.g. 15,42,7") from None
    return prompt_token_ids(args.model, model, args.prompt)


def run_on_nodes(args) -> int:
    """``--config``: the generation runs on the deployment's nodes, the cache in a session there."""
    from rich.console import Console

    from ..distributed.config import load_config
    from ..distributed.generation import GenerationClient
    from ..generate import Sampler

    if not args.model_id:
        raise DittoError("--config runs the generation on the nodes: give the uploaded model's --model-id "
                         "(`ditto-spu upload --task generate`)")
    if args.prompt_ids is None:
        raise DittoError("on the nodes give the prompt as --prompt-ids (the client does not load the model's tokenizer)")
    ids, _ = _prompt_ids(args, None)
    console = Console(stderr=True)
    with console.status(f"generating on the nodes of {args.config}") as status:
        result = GenerationClient(load_config(args.config)).generate(
            args.model_id, ids, args.max_new_tokens, Sampler(args.temperature, args.top_k, args.seed),
            progress=status.update)
    summary = result.summary()
    summary["logits"] = [np.asarray(x).tolist() for x in result.logits] if args.logits else None
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    out = Console()
    out.print(f"model id [bold]{args.model_id}[/bold] on the nodes: prompt {len(ids)} tokens, "
              f"{len(result.tokens)} new tokens (the key/value cache stayed at the nodes)")
    out.print(f"  tokens: {result.tokens}")
    first = result.passes[0]
    out.print(f"  {result.seconds_per_token:.2f} s per decoding step (client wall); prompt pass {first['wall_s']:.2f} s "
              f"(of which link set-up {first['link_setup_s']:.2f} s)")
    return 0


def run(args) -> int:
    if args.config:
        return run_on_nodes(args)
    from rich.console import Console

    from ..generate import Sampler, run_generation
    from ..models import load_model

    console = Console(stderr=True)
    with console.status(f"loading {args.model}") as status:
        model = load_model(args.model)
        ids, how = _prompt_ids(args, model)
        if how == "word-hash":
            console.print(f"{args.model} has no tokenizer: the prompt's ids are the word hash of `ditto-spu infer` "
                          f"({len(ids)} tokens); use --prompt-ids to give ids")
        summary = run_generation(
            model, args.mode, ids, args.max_new_tokens, policy=args.policy, model_name=args.model,
            sampler=Sampler(args.temperature, args.top_k, args.seed), compare=not args.no_compare,
            progress=status.update,
        )
    summary["prompt_tokenization"] = how
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    out = Console()
    out.print(f"[bold]{summary['model']}[/bold] in mode [bold]{summary['mode']}[/bold]: prompt {len(ids)} tokens "
              f"({how}), {len(summary['tokens'])} new tokens")
    out.print(f"  secure tokens:     {summary['tokens']}")
    if "emulation_tokens" in summary:
        out.print(f"  emulation tokens:  {summary['emulation_tokens']}")
        out.print(f"  plaintext tokens:  {summary['plaintext_tokens']}")
        vs = summary["vs_emulation"]
        out.print(f"  along the secure tokens, logits vs emulation: relative L2 max {vs['logits_rel_l2_max']:.2e}; "
                  f"greedy flips {len(vs['greedy_flips'])}")
    out.print(f"  {summary['seconds_per_token']:.2f} s and {summary['bytes_per_token'] / 1e6:.2f} MB (busiest party) "
              f"per decoding step; prompt pass {summary['prompt_pass']['wall_s']:.2f} s")
    for row in summary["cost_by_bucket"]:
        out.print(f"    {row['kind']:>6} [{row['slots']:>4} slots] × {row['passes']}: {row['wall_s_mean']:.2f} s, "
                  f"{row['bytes_max_party_mean'] / 1e6:.2f} MB, {row['rounds']} rounds")
    out.print(f"  cache held by each party at the end: {summary['cache_bytes_per_party'] / 1e6:.2f} MB of shares")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="GPT-2 text generation, the key/value cache in secret shares (simulation, "
                                        "or the nodes with --config)")
    p.add_argument("--config", default=None, help="deployment config: generate on its nodes (cache kept there)")
    p.add_argument("--model-id", default=None, help="with --config: the model id uploaded with --task generate")
    p.add_argument("--logits", action="store_true", help="with --config --json: print each step's logits too")
    p.add_argument("--model", default="tiny-gpt2", help="tiny-gpt2, gpt2-base, gpt2-medium or a GPT-2 LM directory")
    p.add_argument("--mode", default="ditto", help="puma, mpcformer, ditto, ditto-puma, ditto-steps, ditto-2quad, exact or a mode JSON")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="Secure inference keeps both the model and the input private",
                        help="prompt text (the model's tokenizer, else the word hash of `infer`)")
    prompt.add_argument("--prompt-ids", default=None, help="prompt token ids, e.g. 15,42,7")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--policy", default=None, help="precision policy JSON")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (client side)")
    p.add_argument("--no-compare", action="store_true", help="skip the emulation and plaintext references")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
