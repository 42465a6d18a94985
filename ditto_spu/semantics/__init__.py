"""Fixed-point semantics: what each ring computes, defined once (see interpreter.py)."""
