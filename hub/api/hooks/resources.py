"""``ANY /hooks/{token}``: the public webhook endpoint. No auth header: the token (and the trigger's
signature check) is the credential."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from hub.api.errors import ApiError
from hub.db import db
from hub.services.hooks import (
    DEFAULT_MAX_BODY,
    Inbound,
    check_rate_limit,
    find_trigger,
    ingest,
    log_refusal,
    sync_answer,
)
from hub.services.live import waker_for

blp = Blueprint("hooks", __name__, url_prefix="/hooks", description="Inbound webhooks")


class AcceptedSchema(Schema):
    run_id = fields.Integer()
    duplicate = fields.Boolean(metadata={"description": "true when the delivery id was seen before; run_id "
                                                        "is then the original delivery's run"})
    status = fields.String()


def _read_body(limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "payload_too_large", f"the body is {length} bytes; this webhook accepts at most {limit}")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes, this webhook's limit")
    return data


@blp.route("/<token>", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
class Hook(MethodView):
    def _handle(self, token: str):
        hub = current_app.extensions["hookhub"]
        trigger = find_trigger(token)
        config = trigger.config or {}
        methods = config.get("methods") or ["POST", "PUT", "PATCH", "GET", "DELETE"]
        if request.method not in methods and not (request.method == "HEAD" and "GET" in methods):
            raise ApiError(405, "method_not_allowed", f"this webhook accepts {', '.join(methods)}",
                           headers={"Allow": ", ".join(methods)})
        check_rate_limit(trigger, hub.settings.redis_url)
        inbound = Inbound(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            query={k: v[0] if len(v) == 1 else v for k, v in request.args.lists()},
            body=b"",
            content_type=request.content_type,
        )
        try:
            inbound.body = _read_body(int(config.get("max_body_bytes") or DEFAULT_MAX_BODY))
        except ApiError as exc:
            log_refusal(trigger, inbound, exc.status, exc.message, keep_body=False)
            raise
        accepted = ingest(trigger, inbound, hub.secret_box)
        db.close()  # hand the connection back now: a sync answer may wait for seconds (it polls on its own)
        hub.ring(accepted.bells)  # only after the commit: the database is the truth, the queue a doorbell
        run_header = {"X-Hookhub-Run-Id": str(accepted.run_id)}
        if config.get("response") == "sync":
            # woken by the workers' "task done" messages (Redis, or the embedded doorbell), not the poll alone
            waker = waker_for(hub.settings.redis_url, hub.huey)
            status, body = sync_answer(accepted.run_id, float(config.get("sync_timeout_seconds") or 30), waker)
            response = jsonify(body)
            if status >= 400:
                response.mimetype = "application/problem+json"
            return response, status, run_header
        return jsonify({"run_id": accepted.run_id, "duplicate": accepted.duplicate, "status": "accepted"}), 202, \
            run_header

    @blp.response(202, AcceptedSchema, description="accepted: the delivery and its run are committed (async "
                                                   "mode, or a sync run still going after its timeout)")
    @blp.alt_response(200, description="sync mode: the run succeeded; the body is the flow's `output`")
    @blp.alt_response(401, schema="Problem", description="signature missing, wrong or expired "
                                                         "(`signature_missing|signature_invalid|signature_expired`)")
    @blp.alt_response(404, schema="Problem", description="unknown or disabled webhook")
    @blp.alt_response(409, schema="Problem", description="sync mode: the run was cancelled (`run_cancelled`)")
    @blp.alt_response(413, schema="Problem", description="body over the trigger's max_body_bytes")
    @blp.alt_response(429, schema="Problem", description="over the trigger's rate_limit; see Retry-After")
    @blp.alt_response(502, schema="Problem", description="sync mode: the run failed (`run_failed`, with run_id)")
    def post(self, token):
        """Deliver a webhook.

        Async triggers answer 202 `{run_id}` once the delivery and its run are committed. Sync triggers
        wait up to `sync_timeout_seconds` and answer 200 with the flow's `output`, 502 `run_failed` or
        409 `run_cancelled`, or 202 `{run_id}` if the run is still going. A repeated delivery id answers
        with the original run (`duplicate: true`). Every answer carries `X-Hookhub-Run-Id` when a run
        exists."""
        return self._handle(token)

    def get(self, token):
        """Deliver a webhook (GET)"""
        return self._handle(token)

    def put(self, token):
        """Deliver a webhook (PUT)"""
        return self._handle(token)

    def patch(self, token):
        """Deliver a webhook (PATCH)"""
        return self._handle(token)

    def delete(self, token):
        """Deliver a webhook (DELETE)"""
        return self._handle(token)
