"""Helpers the tests share: importable as `helpers.<module>` (pytest's `pythonpath` has tests/).

Test modules import constants and functions from here, never from `conftest` or from each
other; fixtures live in conftest.py. `helpers.ray_oracles` imports Ray and vLLM (about 11 s):
test modules reach it only through the `ray_oracles` fixture, never at import time.
"""
