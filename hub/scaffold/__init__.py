"""``hookhub connectors new NAME``: a ready-to-publish connector package from the templates here.

Templates are the ``*.tmpl`` files beside this module, rendered with :class:`string.Template`
(``${name}``); a path part ``__package__`` becomes the Python package name.
"""

from __future__ import annotations

import keyword
import re
import string
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Names", "ScaffoldError", "names_for", "render_package"]

TEMPLATES = Path(__file__).parent
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


class ScaffoldError(ValueError):
    """The name or destination cannot be used; the message says why."""


@dataclass(frozen=True)
class Names:
    name: str  # the connector name flows use: acme-ticket
    dist: str  # the distribution on PyPI: hookhub-acme-ticket
    package: str  # the Python package: hookhub_acme_ticket
    cls: str  # the connector class: AcmeTicket
    entry: str  # the entry-point name: acme_ticket


def names_for(name: str) -> Names:
    if not _NAME_RE.match(name) or len(name) > 60:
        raise ScaffoldError(
            f"{name!r} is not a connector name: use lowercase letters and digits, words joined by '-' "
            "(e.g. acme-ticket)"
        )
    base = name.removeprefix("hookhub-").removeprefix("hookhub_") or name
    words = re.split(r"[-_]", base)
    cls = "".join(w.capitalize() for w in words)
    if keyword.iskeyword(cls) or not cls.isidentifier() or cls[0].isdigit():
        raise ScaffoldError(f"{name!r} does not make a Python class name")
    snake = "_".join(words)
    return Names(name=base.replace("_", "-"), dist=f"hookhub-{snake.replace('_', '-')}",
                 package=f"hookhub_{snake}", cls=cls, entry=snake)


def render_package(name: str, dest: Path, description: str | None = None) -> tuple[Path, list[Path]]:
    """Write the package for connector ``name`` under ``dest``; returns (package dir, files written).

    :raises ScaffoldError: a bad name, or the package directory exists already.
    """
    names = names_for(name)
    root = Path(dest) / names.dist
    if root.exists():
        raise ScaffoldError(f"{root} exists already; choose another --dir or remove it")
    values = {
        "name": names.name,
        "dist": names.dist,
        "package": names.package,
        "cls": names.cls,
        "entry": names.entry,
        "description": (description or f"The {names.name} connector for Hookhub").replace('"', "'"),
    }
    written: list[Path] = []
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATES).with_suffix("")
        target = root / Path(*[values["package"] if p == "__package__" else p for p in relative.parts])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(string.Template(template.read_text()).substitute(values))
        written.append(target)
    return root, written
