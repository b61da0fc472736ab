"""A plugin module that cannot be imported (a missing dependency, say)."""

raise ImportError("hookhub_acme needs acme-sdk>=2, which is not installed")
