"""``ANY /hooks/{token}``: the public webhook endpoint. No auth header: the token (and the trigger's
signature check) is the credential."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from hub.api.errors import ApiError
from hub.services.hooks import DEFAULT_MAX_BODY, Inbound, find_trigger, ingest, wait_for_run

blp = Blueprint("hooks", __name__, url_prefix="/hooks", description="Inbound webhooks")


class AcceptedSchema(Schema):
    run_id = fields.Integer()
    duplicate = fields.Boolean(metadata={"description": "true when the delivery id was seen before"})
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
        trigger = find_trigger(token)
        config = trigger.config or {}
        methods = config.get("methods") or ["POST", "PUT", "PATCH", "GET", "DELETE"]
        if request.method not in methods and not (request.method == "HEAD" and "GET" in methods):
            raise ApiError(405, "method_not_allowed", f"this webhook accepts {', '.join(methods)}",
                           headers={"Allow": ", ".join(methods)})
        inbound = Inbound(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            query={k: v[0] if len(v) == 1 else v for k, v in request.args.lists()},
            body=_read_body(int(config.get("max_body_bytes") or DEFAULT_MAX_BODY)),
            content_type=request.content_type,
        )
        hub = current_app.extensions["hookhub"]
        run_id, duplicate, bells = ingest(trigger, inbound)
        hub.ring(bells)
        if config.get("response") == "sync":
            run = wait_for_run(run_id, float(config.get("sync_timeout_seconds") or 30))
            if run is not None:
                status = 200 if run.status == "succeeded" else 500 if run.status == "failed" else 200
                if run.status == "failed":
                    return jsonify({"run_id": run_id, "status": run.status, "error": run.error}), 502
                return jsonify(run.output if run.output is not None else {"run_id": run_id,
                                                                           "status": run.status}), status
        return jsonify({"run_id": run_id, "duplicate": duplicate, "status": "accepted"}), 202

    @blp.response(202, AcceptedSchema)
    @blp.alt_response(404, schema="Problem", description="unknown or disabled webhook")
    @blp.alt_response(413, schema="Problem", description="body over the trigger's max_body_bytes")
    def post(self, token):
        """Deliver a webhook. Async triggers answer 202 once delivery and run are committed; sync triggers
        answer with the flow's output (or 202 with the run id if it takes longer than their timeout)."""
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
