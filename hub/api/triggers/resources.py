"""Triggers: webhooks and schedules that start a flow."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from flask import current_app, request
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.flows.resources import get_flow
from hub.api.pagination import PageArgs, page_of
from hub.api.security import auth_required, owned_or_404
from hub.api.triggers.schemas import (
    DeliveryArgs,
    DeliveryPageSchema,
    RotateSchema,
    TriggerInSchema,
    TriggerPageSchema,
    TriggerPatchSchema,
    TriggerSchema,
)
from hub.db import write_transaction
from hub.models import Delivery, FlowVersion, Trigger, TriggerToken, iso, utcnow
from hub.scheduler import next_fire_times

blp = Blueprint("triggers", __name__, url_prefix="/api/v1", description="Webhook and schedule triggers")

_COLUMNS = ("type", "enabled", "flow_version")


def public_url(token: str) -> str:
    base = current_app.extensions["hookhub"].settings.public_url or request.host_url
    return base.rstrip("/") + f"/hooks/{token}"


_HIDDEN_VERIFY = {"secret", "secret_ciphertext", "previous_secrets"}


def trigger_doc(t: Trigger) -> dict:
    config = dict(t.config)
    verify = config.get("verify")
    if verify:
        config["verify"] = {k: v for k, v in verify.items() if k not in _HIDDEN_VERIFY} | {
            "secret_set": bool(verify.get("secret") or verify.get("secret_ciphertext") or verify.get("secret_ref")),
            "previous_secrets_expire_at": [p["expires_at"] + "Z" for p in verify.get("previous_secrets") or []],
        }
    doc = {"id": t.id, "flow_id": t.flow_id, "type": t.type, "enabled": t.enabled,
           "flow_version": t.flow_version, "config": config,
           "created_at": iso(t.created_at), "updated_at": iso(t.updated_at)}
    if t.type == "webhook":
        doc["url"] = public_url(t.token)
        old = (TriggerToken.select().where((TriggerToken.trigger == t.id) & (TriggerToken.expires_at > utcnow()))
               .order_by(TriggerToken.expires_at.desc()).first())
        if old is not None:
            doc["previous_url_expires_at"] = iso(old.expires_at)
    elif config.get("cron"):
        doc["next_fire_times"] = [iso(s) for s in next_fire_times(config["cron"], config.get("timezone"))]
    return doc


def _box():
    return current_app.extensions["hookhub"].secret_box


def _seal_verify(new: dict | None, old: dict | None) -> dict | None:
    """Encrypt a given ``secret`` (never stored in clear); keep the old secret when none is given."""
    if not new:
        return new
    new = dict(new)
    old = old or {}
    if new.get("secret"):
        new["secret_ciphertext"] = _box().encrypt(new.pop("secret"))
    elif not new.get("secret_ref"):
        for key in ("secret_ciphertext", "previous_secrets", "secret"):
            if old.get(key):
                new[key] = old[key]
    if not (new.get("secret_ciphertext") or new.get("secret_ref") or new.get("secret")):
        raise ApiError(422, "validation_error", "a verification scheme needs a secret",
                       {"verify": {"secret": ["give secret or secret_ref"]}})
    if new.get("scheme") == "basic" and not new.get("username"):
        raise ApiError(422, "validation_error", "basic verification needs a username",
                       {"verify": {"username": ["required for scheme basic"]}})
    return new


def _check_version(flow_id: int, version: int | None) -> None:
    if version is not None and not FlowVersion.select().where(
            (FlowVersion.flow == flow_id) & (FlowVersion.version == version)).exists():
        raise ApiError(422, "version_not_found", f"flow {flow_id} has no version {version}",
                       {"flow_version": [f"no version {version}"]})


def get_trigger(trigger_id: int) -> Trigger:
    return owned_or_404(Trigger, trigger_id, "trigger_not_found", "trigger")


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
        if config.get("verify"):
            config["verify"] = _seal_verify(config["verify"], None)
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
        public = {k: v for k, v in t.config.items() if k != "verify"}
        errors = TriggerInSchema().validate({"type": t.type, **public, **body})
        if errors:
            raise ApiError(422, "validation_error", "the trigger settings are invalid", errors)
        if "verify" in body:
            body["verify"] = _seal_verify(body["verify"], t.config.get("verify"))
        t.config = {**t.config, **body}
        t.updated_at = utcnow()
        t.save()
        return trigger_doc(t)

    @auth_required("editor")
    @blp.response(204)
    def delete(self, trigger_id):
        """Delete a trigger; its webhook URL stops working at once"""
        get_trigger(trigger_id).delete_instance()


def _new_secret(scheme: str | None) -> str:
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return secrets.token_urlsafe(32)


@blp.route("/triggers/<int:trigger_id>/rotate")
class TriggerRotate(MethodView):
    @auth_required("editor")
    @blp.arguments(RotateSchema)
    @blp.response(200, TriggerSchema)
    @blp.alt_response(422, schema="Problem", description="not a webhook, or no verification to rotate")
    def post(self, body, trigger_id):
        """Rotate a webhook's token (its URL) or its verification secret.

        The previous token or secret is still accepted for `overlap_seconds` (default one day), so senders
        can be switched over without losing deliveries. A generated secret is shown once, in `secret`."""
        t = get_trigger(trigger_id)
        if t.type != "webhook":
            raise ApiError(422, "not_a_webhook", "only webhook triggers have a token or a secret to rotate")
        expires = utcnow() + dt.timedelta(seconds=body["overlap_seconds"])
        shown = None
        with write_transaction():
            if body["what"] == "token":
                if body.get("secret"):
                    raise ApiError(422, "validation_error", "secret is only for what=secret",
                                   {"secret": ["not allowed with what=token"]})
                if body["overlap_seconds"] > 0:
                    TriggerToken.create(trigger=t.id, token=t.token, expires_at=expires)
                t.token = secrets.token_urlsafe(24)
            else:
                verify = dict(t.config.get("verify") or {})
                if not verify.get("scheme"):
                    raise ApiError(422, "no_verification", "this webhook has no verification secret to rotate")
                if verify.get("secret_ref"):
                    raise ApiError(422, "secret_by_reference", "this webhook's secret is the workspace secret "
                                   f"{verify['secret_ref']!r}: rotate it there")
                box = _box()
                current = verify.pop("secret", None)
                current_ct = verify.get("secret_ciphertext") or (box.encrypt(current) if current else None)
                now = utcnow()
                kept = [p for p in verify.get("previous_secrets") or []
                        if dt.datetime.fromisoformat(p["expires_at"]) > now]
                if current_ct and body["overlap_seconds"] > 0:
                    kept.append({"ciphertext": current_ct, "expires_at": expires.isoformat()})
                new_secret = body.get("secret") or _new_secret(verify.get("scheme"))
                if not body.get("secret"):
                    shown = new_secret
                verify["secret_ciphertext"] = box.encrypt(new_secret)
                verify["previous_secrets"] = kept
                t.config = {**t.config, "verify": verify}
            t.updated_at = utcnow()
            t.save()
        doc = trigger_doc(t)
        if shown:
            doc["secret"] = shown
        return doc


def delivery_doc(d: Delivery) -> dict:
    raw = bytes(d.body) if d.body is not None else None
    body, encoding = None, "utf-8"
    if raw is not None:
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(raw).decode(), "base64"
    return {"id": d.id, "trigger_id": d.trigger_id, "received_at": iso(d.received_at), "method": d.method,
            "status": d.status, "status_code": d.status_code, "error": d.error, "dedupe_key": d.dedupe_key,
            "run_id": d.run_id, "headers": d.headers, "query": d.query, "content_type": d.content_type,
            "body": body, "body_encoding": encoding, "body_bytes": len(raw) if raw is not None else 0}


@blp.route("/triggers/<int:trigger_id>/deliveries")
class TriggerDeliveries(MethodView):
    @auth_required()
    @blp.arguments(DeliveryArgs, location="query")
    @blp.response(200, DeliveryPageSchema)
    def get(self, args, trigger_id):
        """The webhook's delivery log, newest first: accepted, duplicate and rejected (401/413) deliveries,
        with credentials in headers redacted"""
        t = get_trigger(trigger_id)
        query = Delivery.select().where(Delivery.trigger == t.id)
        if args.get("status"):
            query = query.where(Delivery.status == args["status"])
        return page_of(query.order_by(Delivery.id.desc()), args, delivery_doc)
