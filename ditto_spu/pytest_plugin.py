"""pytest plugin (registered as a ``pytest11`` entry point): run tests under the aligned
allocator. pytest imports entry-point plugins before it starts capturing output, so the
re-executed process (same command line, LD_PRELOAD set) keeps the terminal."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ditto_spu import native  # noqa: E402

native.ensure_preloaded()
