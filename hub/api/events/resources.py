"""Server-Sent Events of the run event log, Prometheus metrics, and the built-in run viewer."""

from __future__ import annotations

from functools import wraps
from importlib import resources as pkg_resources

from flask import Response, current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from hub.api.errors import ApiError, problem
from hub.api.security import auth_required, owned_or_404
from hub.db import connection
from hub.models import Run
from hub.services import streams
from hub.services.live import waker_for

blp = Blueprint("events", __name__, description="Live run events (Server-Sent Events)")
obs_blp = Blueprint("observability", __name__, description="Prometheus metrics and the built-in run viewer")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DOC = {
    "responses": {"200": {
        "description": "`text/event-stream`. Each event: `id:` (see the route), `data:` a JSON object "
                       "`{id, run_id, seq, type, node_id, data, created_at}`. Comment lines (`: keepalive`) "
                       "every 15 s of silence.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }},
    "parameters": [{
        "name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0},
        "description": "Resume after this event id (browsers send it on reconnect by themselves).",
    }],
}


class StreamArgs(Schema):
    access_token = fields.String(metadata={"description": (
        "An access token, for clients that cannot send headers (browser `EventSource`). Accepted on the "
        "event-stream routes only; prefer the `Authorization` header elsewhere: URLs end up in logs.")})
    last_event_id = fields.Integer(validate=validate.Range(min=0), metadata={
        "description": "Same as the `Last-Event-ID` header (the header wins)."})


class RunStreamArgs(StreamArgs):
    follow = fields.Boolean(load_default=True, metadata={
        "description": "false: send what is logged so far, then `end`."})


class WorkspaceStreamArgs(StreamArgs):
    run_id = fields.List(fields.Integer(), metadata={"description": "only these runs (repeatable)"})


def stream_auth(fn):
    """``@auth_required()`` that also takes ``?access_token=`` (EventSource cannot send headers)."""
    inner = auth_required()(fn)

    @wraps(inner)
    def wrapper(*args, **kwargs):
        token = request.args.get("access_token")
        if token and not (request.headers.get("Authorization") or request.headers.get("X-API-Key")):
            request.environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return inner(*args, **kwargs)

    return wrapper


def _last_event_id(args: dict) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        return args.get("last_event_id")
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_last_event_id", "Last-Event-ID must be an event id (a non-negative integer)",
                       {"Last-Event-ID": ["not a non-negative integer"]})
    return int(raw)


def _waker():
    hub = current_app.extensions["hookhub"]
    return waker_for(hub.settings.redis_url, hub.huey)


def _sse(body) -> Response:
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


@blp.route("/api/v1/runs/<int:run_id>/events")
class RunEvents(MethodView):
    @stream_auth
    @blp.arguments(RunStreamArgs, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, run_id):
        """Stream a run's events (SSE). The event id is the run's `seq`: resume with `Last-Event-ID`.

        Without `Last-Event-ID` the stream starts at the run's first event. Once the run has finished
        and all its events were sent, an `end` event (no id) closes the stream.
        """
        with connection():
            owned_or_404(Run, run_id, "run_not_found", "run")
        after = _last_event_id(args) or 0
        return _sse(streams.run_events(run_id, after, _waker(), follow=args["follow"]))


@blp.route("/api/v1/events")
class WorkspaceEvents(MethodView):
    @stream_auth
    @blp.arguments(WorkspaceStreamArgs, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args):
        """Stream every run event of the workspace (SSE). The event id is the global event id.

        Resume with `Last-Event-ID`; without it the stream starts at the newest event. Events are sent
        in id order; an id is stepped over only once every lower id has committed (or a missing id has
        stayed missing for 2 s), so a reconnect never misses a late commit.
        """
        after = _last_event_id(args)
        if after is None:
            after = streams.latest_event_id()
        run_ids = set(args["run_id"]) if args.get("run_id") else None
        return _sse(streams.workspace_events(g.principal.workspace_id, after, _waker(), run_ids=run_ids))


@obs_blp.route("/metrics")
class Metrics(MethodView):
    @obs_blp.doc(responses={"200": {"description": "Prometheus text exposition format",
                                "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def get(self):
        """Prometheus metrics of the whole hub, derived from the database at scrape time"""
        from prometheus_client import CONTENT_TYPE_LATEST

        from hub.metrics import render_metrics

        hub = current_app.extensions["hookhub"]

        def queue() -> dict[str, float]:
            return {"ready": float(hub.huey.pending_count()), "scheduled": float(hub.huey.scheduled_count())}

        try:
            body = render_metrics(queue)
        except Exception as exc:  # the database or queue is down: say so, as /ready does
            current_app.logger.warning("metrics scrape failed: %s", exc)
            return problem(503, "not_ready", f"metrics unavailable: {type(exc).__name__}: {exc}")
        return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)


@obs_blp.route("/ui")
class RunViewer(MethodView):
    @obs_blp.doc(responses={"200": {"description": "the run viewer page",
                                "content": {"text/html": {"schema": {"type": "string"}}}}})
    def get(self):
        """The built-in run viewer: flows, runs and a run's live DAG (one HTML page, no build step)"""
        page = pkg_resources.files("hub").joinpath("static/ui.html").read_bytes()
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-cache"})
