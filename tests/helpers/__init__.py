"""Helpers the tests share: importable as `helpers.<module>` (pytest's `pythonpath` has tests/)."""
