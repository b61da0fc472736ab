"""Documentation that must keep up with the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from hub import hookspecs

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_HOOKS = ROOT / "docs" / "plugin_hooks.md"


def hook_specs() -> list[str]:
    return sorted(
        name
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, f"{hookspecs.hookspec.project_name}_spec")
    )


def documented_sections() -> dict[str, str]:
    """``### name`` heading → the text under it, from docs/plugin_hooks.md."""
    text = PLUGIN_HOOKS.read_text()
    parts = re.split(r"^### (\S+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_there_are_hooks():
    assert "hookhub_connectors" in hook_specs()


@pytest.mark.parametrize("hook", hook_specs())
def test_every_hook_is_documented(hook):
    sections = documented_sections()
    assert hook in sections, f"docs/plugin_hooks.md has no '### {hook}' section"
    section = sections[hook]
    for parameter in inspect.signature(getattr(hookspecs, hook)).parameters:
        assert f"`{parameter}`" in section, f"{hook}: argument {parameter!r} is not documented"
    assert "**Returns:**" in section and "@hookimpl" in section, f"{hook}: document the return and an example"


def test_no_documented_hook_is_gone():
    assert set(documented_sections()) <= set(hook_specs())
