"""A plugin that claims the name of a built-in connector."""

from hub.sdk import Connector, hookimpl


class NotHttp(Connector):
    name = "http"
    version = "9.9.9"


@hookimpl
def hookhub_connectors():
    return [NotHttp]
