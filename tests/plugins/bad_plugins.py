"""Plugins that misbehave in each way the registry records as a problem."""

from types import ModuleType

from hub.sdk import Connector, hookimpl


class Fine(Connector):
    name = "fine"
    version = "1.0.0"


class Nameless(Connector):
    version = "1.0.0"


class BadVersion(Connector):
    name = "bad-version"
    version = "one"


class BadName(Connector):
    name = "Bad Name@1"
    version = "1.0.0"


class NotAConnector:
    name = "impostor"
    version = "1.0.0"


@hookimpl
def _raises():
    raise RuntimeError("the plugin's own bug")


@hookimpl
def _not_a_list():
    return Fine


@hookimpl
def _mixed():
    return [Fine, Nameless, BadVersion, BadName, NotAConnector, "http"]


def plugin(name, hook):
    """A module-like plugin object named ``name`` whose hookhub_connectors is ``hook``."""
    module = ModuleType(name)
    module.hookhub_connectors = hook
    return module


raising = plugin("tests.plugins.raising", _raises)
not_a_list = plugin("tests.plugins.not_a_list", _not_a_list)
mixed = plugin("tests.plugins.mixed", _mixed)


@hookimpl
def _bad_signature(unknown_argument):
    return []


bad_signature = plugin("tests.plugins.bad_signature", _bad_signature)
