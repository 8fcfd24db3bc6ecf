"""Located configuration problems for every input file: `FILE:LINE: field.path: message`.

Neutral ground for `serve` (the catalog) and `infra` (the stack files): YAML loading that
remembers lines, pydantic errors turned into one actionable sentence each, the strict base
models, and the secret patterns no message may echo.
"""
