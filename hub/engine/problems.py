"""Validation problems: one shape for every complaint about a flow document.

Kept apart from ``flow`` so that ``templates`` can report problems without an import cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document.

    ``path`` points into the document ("nodes[2].config.url", "edges[0].to", "" for the root);
    ``code`` is stable and meant for programs; ``message`` is for people.
    """

    path: str
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.path or '<document>'}: {self.message} [{self.code}]"


class FlowInvalid(Exception):
    """A flow document was refused; ``problems`` lists every reason, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {n - 5} more)" if n > 5 else ""
        super().__init__(f"invalid flow, {n} problem{'s' if n != 1 else ''}: {head}{more}")


def join_path(path: str, key: object) -> str:
    """Extend a document path by a mapping key or a list index."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    text = str(key)
    if text and (text[0].isalpha() or text[0] == "_") and all(c.isalnum() or c in "_-" for c in text):
        return f"{path}.{text}" if path else text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'
