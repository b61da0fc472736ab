"""Every Hookhub hook, in one file.

Plugins implement these with ``@hub.sdk.hookimpl`` and are found through the ``hookhub``
entry-point group. The built-in connectors are plugins of exactly this kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from hub.sdk import Connector

hookspec = pluggy.HookspecMarker("hookhub")


@hookspec
def hookhub_connectors() -> list[type[Connector]]:
    """Return the connector classes this plugin provides.

    Called once per process at start-up; every plugin's lists are merged. Each class must subclass
    :class:`hub.sdk.Connector` and carry a unique ``name``; two classes with one name stop start-up
    with an error naming both plugins.

    :returns: a list of :class:`hub.sdk.Connector` subclasses.
    """
