"""Located configuration problems: `FILE:LINE: field.path: message`, all of them at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from configcheck.secrets import redact

Path_ = tuple[str | int, ...]


def format_path(path: Path_) -> str:
    """("models", 2, "tier") -> "models[2].tier"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


@dataclass
class LineMap:
    """Line of every key and list item of a YAML document, by path."""

    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """Line of `path`, or of its nearest ancestor present in the file (1 for the document)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(tuple(path[:end]))
            if found is not None:
                return found
        return 1


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __post_init__(self) -> None:
        # Never echo a secret: a token pasted into the wrong key would otherwise be printed
        # back in full by every message that quotes the value.
        # One line per problem, always: a message built from a multi-line error (a YAML
        # parser's, a library's) would otherwise break `FILE:LINE: field: message` parsing.
        object.__setattr__(self, "message", redact(" ".join(self.message.split())))
        # A token pasted where a key or list item belongs reaches the field path as well.
        object.__setattr__(self, "field", redact(self.field))
        object.__setattr__(self, "line", max(1, self.line))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    """One or more problems in input files; str() gives one line per problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("ConfigError needs at least one problem")
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.field, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def locate(file: str, lines: LineMap, path: Path_, message: str) -> Problem:
    """A problem at `path`, on the line of the deepest part of the path that exists in the file."""
    return Problem(file=file, line=lines.line_of(path), field=format_path(path), message=message)
