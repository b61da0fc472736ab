"""Triggers: webhooks and schedules that start a flow."""

from __future__ import annotations

import secrets

from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.flows.resources import get_flow
from hub.api.pagination import PageArgs, page_of
from hub.api.security import auth_required
from hub.api.triggers.schemas import TriggerInSchema, TriggerPageSchema, TriggerPatchSchema, TriggerSchema
from hub.db import write_transaction
from hub.models import FlowVersion, Trigger, utcnow

blp = Blueprint("triggers", __name__, url_prefix="/api/v1", description="Webhook and schedule triggers")

_COLUMNS = ("type", "enabled", "flow_version")


def _ts(value):
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def public_url(token: str) -> str:
    base = current_app.extensions["hookhub"].settings.public_url or request.host_url
    return base.rstrip("/") + f"/hooks/{token}"


def trigger_doc(t: Trigger) -> dict:
    config = dict(t.config)
    if "verify" in config and config["verify"]:
        config["verify"] = {k: v for k, v in config["verify"].items() if k != "secret"} | {
            "secret_set": bool(config["verify"].get("secret"))}
    doc = {"id": t.id, "flow_id": t.flow_id, "type": t.type, "enabled": t.enabled,
           "flow_version": t.flow_version, "config": config,
           "created_at": _ts(t.created_at), "updated_at": _ts(t.updated_at)}
    if t.type == "webhook":
        doc["url"] = public_url(t.token)
    return doc


def _check_version(flow_id: int, version: int | None) -> None:
    if version is not None and not FlowVersion.select().where(
            (FlowVersion.flow == flow_id) & (FlowVersion.version == version)).exists():
        raise ApiError(422, "version_not_found", f"flow {flow_id} has no version {version}",
                       {"flow_version": [f"no version {version}"]})


def get_trigger(trigger_id: int) -> Trigger:
    t = Trigger.get_or_none((Trigger.id == trigger_id) & (Trigger.workspace == g.principal.workspace_id))
    if t is None:
        raise ApiError(404, "trigger_not_found", f"no trigger with id {trigger_id}")
    return t


@blp.route("/flows/<int:flow_id>/triggers")
class FlowTriggers(MethodView):
    @auth_required()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, TriggerPageSchema)
    def get(self, args, flow_id):
        """List a flow's triggers"""
        flow = get_flow(flow_id)
        return page_of(Trigger.select().where(Trigger.flow == flow.id).order_by(Trigger.id), args, trigger_doc)

    @auth_required("editor")
    @blp.arguments(TriggerInSchema)
    @blp.response(201, TriggerSchema)
    def post(self, body, flow_id):
        """Add a webhook or schedule trigger; a webhook's answer includes its public `url`"""
        flow = get_flow(flow_id)
        _check_version(flow.id, body.get("flow_version"))
        config = {k: v for k, v in body.items() if k not in _COLUMNS}
        with write_transaction():
            t = Trigger.create(
                workspace=flow.workspace_id, flow=flow.id, type=body["type"], enabled=body["enabled"],
                flow_version=body.get("flow_version"), config=config,
                token=secrets.token_urlsafe(24) if body["type"] == "webhook" else None,
            )
        return trigger_doc(t)


@blp.route("/triggers/<int:trigger_id>")
class TriggerById(MethodView):
    @auth_required()
    @blp.response(200, TriggerSchema)
    def get(self, trigger_id):
        """Read a trigger"""
        return trigger_doc(get_trigger(trigger_id))

    @auth_required("editor")
    @blp.arguments(TriggerPatchSchema(partial=True))
    @blp.response(200, TriggerSchema)
    def put(self, body, trigger_id):
        """Change a trigger's settings (fields not sent keep their values; its type cannot change)"""
        t = get_trigger(trigger_id)
        if "type" in body and body["type"] != t.type:
            raise ApiError(422, "type_change", "a trigger's type cannot change; create a new trigger",
                           {"type": ["cannot change"]})
        body.pop("type", None)
        if "flow_version" in body:
            _check_version(t.flow_id, body["flow_version"])
            t.flow_version = body.pop("flow_version")
        if "enabled" in body:
            t.enabled = body.pop("enabled")
        errors = TriggerInSchema().validate({"type": t.type, **t.config, **body})
        if errors:
            raise ApiError(422, "validation_error", "the trigger settings are invalid", errors)
        t.config = {**t.config, **body}
        t.updated_at = utcnow()
        t.save()
        return trigger_doc(t)

    @auth_required("editor")
    @blp.response(204)
    def delete(self, trigger_id):
        """Delete a trigger; its webhook URL stops working at once"""
        get_trigger(trigger_id).delete_instance()
