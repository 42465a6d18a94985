"""Test-session set-up: run under the aligned allocator (FM32 rings need it)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ditto_spu import native  # noqa: E402

# Re-executes pytest with LD_PRELOAD set when the allocator is not loaded yet.
native.ensure_preloaded()
