"""Secure GPT-2 next-token logits in simulation (random weights: cost does not depend on them).

    python examples/gpt2_simulation.py [--model tiny-gpt2|gpt2-base] [--mode ditto] [--seq-len 32]
"""

import ditto_spu.native

ditto_spu.native.ensure_preloaded()  # FXP32 rings need the aligned allocator: first thing

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from ditto_spu.infer import secure_inference  # noqa: E402
from ditto_spu.models import load_model  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="tiny-gpt2")
parser.add_argument("--mode", default="ditto", choices=["puma", "mpcformer", "ditto", "exact"])
parser.add_argument("--seq-len", type=int, default=16)
args = parser.parse_args()

model = load_model(args.model)  # FlaxGPT2LMHeadModel with a random-initialised config
result = secure_inference(
    model, args.mode, "the quick brown fox jumps over the lazy dog", seq_len=args.seq_len, model_name=args.model
)
logits = result.output  # (1, seq, vocab)
print(f"{args.model} in mode {result.mode}: logits {logits.shape}, "
      f"next token after position 0: {int(np.argmax(logits[0, 0]))}")
print(f"  cosine to plaintext FP32      {result.cosine_fp32:.4f}")
print(f"  cosine to plaintext emulation {result.cosine_emulation:.6f}")
print(f"  wall {result.wall_s:.1f} s, bytes sent per party {result.bytes_sent}, rounds <= {result.rounds}")
