"""Append one model to the catalog file, keeping what is there: comments, blank lines and layout.

ruamel.yaml reads the file as a round-trip document (comments and formatting attached to the
nodes), the entry is appended to `models:` with a comment line naming its source and revision,
and the document is written back with the file's own indentation. On the shipped catalog the
old text is a byte-for-byte prefix of the new one (tests/test_catalog_add.py checks it).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.util import load_yaml_guess_indent

from serve.catalog import ModelEntry, Task

# Never fold a long line (a comment, a repo id): folding would change existing lines.
_NO_FOLDING: Final = 4096


def _yaml_for(text: str) -> YAML:
    """A round-trip YAML instance indenting the way `text` does (the shipped file: `  - id:`)."""
    _, sequence_indent, dash_offset = load_yaml_guess_indent(text)
    sequence_indent = sequence_indent or 2
    dash_offset = dash_offset or 0
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = _NO_FOLDING
    yaml.indent(mapping=max(sequence_indent - dash_offset, 2), sequence=sequence_indent, offset=dash_offset)
    return yaml


def _mapping(values: dict[str, Any]) -> CommentedMap:
    mapping = CommentedMap()
    for key, value in values.items():
        if isinstance(value, dict):
            value = _mapping(value)
        elif key == "gpu_memory_utilization" and isinstance(value, float):
            value = ScalarFloat(value, width=4, prec=1)  # 0.90, as the shipped entries write it
        mapping[key] = value
    return mapping


def entry_document(entry: ModelEntry) -> dict[str, Any]:
    """The entry as the shipped ones are written: catalog key order, defaults left out."""
    data: dict[str, Any] = entry.model_dump(mode="json")
    if data["tensor_parallel_size"] == 1:
        del data["tensor_parallel_size"]
    if data["quantization"] is None:
        del data["quantization"]
    if data["task"] == Task.GENERATE.value:
        del data["task"]
    if "concurrency" not in entry.model_fields_set:
        del data["concurrency"]
    data["architecture"] = entry.architecture.model_dump(mode="json", exclude_defaults=True)
    data["engine"] = entry.engine.as_engine_kwargs()
    return data


def appended_text(text: str, entry: ModelEntry, comment: str) -> str:
    """`text` (a catalog) with `entry` appended to its models, under the comment line `comment`."""
    newline = "\r\n" if "\r\n" in text else "\n"
    text = text.replace("\r\n", "\n")
    yaml = _yaml_for(text)
    document = yaml.load(text)
    models = document["models"]
    if not isinstance(models, CommentedSeq):
        raise TypeError("the catalog's models are not a YAML list")
    models.append(_mapping(entry_document(entry)))
    _, _, dash_offset = load_yaml_guess_indent(text)
    # The leading empty line is the blank line between entries.
    models.yaml_set_comment_before_after_key(len(models) - 1, before=f"\n{comment}", indent=dash_offset or 0)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue().replace("\n", newline)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: a reader sees the old file or the new, never half."""
    mode = path.stat().st_mode
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
