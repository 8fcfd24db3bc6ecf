"""Pulumi entry point (`main: infra/` in Pulumi.yaml): `pulumi up -s dev`."""

import sys
from pathlib import Path

# Pulumi runs this directory as a program; make the repo root importable even outside the
# project's virtualenv install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pulumi

from infra.program import define_stack

for name, value in define_stack().items():
    pulumi.export(name, value)
