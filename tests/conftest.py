"""Test-session set-up.

The aligned allocator that FM32 rings need is put in place by ditto_spu.pytest_plugin
(a pytest11 entry point, loaded before output capture starts); this file only checks it.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ditto_spu import native  # noqa: E402

if not native.is_active():
    raise RuntimeError(
        "tests must run under ditto-spu's aligned allocator: install the project "
        "(`make setup`) so its pytest plugin loads, or run `make test`"
    )
