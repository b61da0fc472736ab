"""Liveness, readiness and the installed connectors."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import problem
from hub.api.security import auth_required
from hub.api.system.schemas import ConnectorListSchema, HealthSchema, ReadySchema
from hub.db import check_database

blp = Blueprint("system", __name__, description="Health, readiness and connectors")


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """Process alive"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="database or queue unreachable")
    def get(self):
        """Database and queue reachable"""
        hub = current_app.extensions["hookhub"]
        checks = {"database": "ok", "queue": "ok"}
        try:
            check_database()
        except Exception as exc:
            checks["database"] = str(exc)
        if not hub.queue_ok():
            checks["queue"] = "unreachable"
        if any(v != "ok" for v in checks.values()):
            response = problem(503, "not_ready", "not ready: " + ", ".join(
                f"{k}: {v}" for k, v in checks.items() if v != "ok"))
            return response
        return {"status": "ok", "checks": checks}


@blp.route("/api/v1/connectors")
class Connectors(MethodView):
    @auth_required()
    @blp.response(200, ConnectorListSchema)
    def get(self):
        """List installed connectors, with their config JSON schema, and plugins that failed to load"""
        registry = current_app.extensions["hookhub"].registry
        return {
            "items": [info.to_dict() for info in registry.list()],
            "problems": [{"plugin": p.plugin, "message": p.message} for p in registry.problems],
        }
