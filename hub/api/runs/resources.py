"""Runs: list with filters, read one with every node's state."""

from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.pagination import page_of
from hub.api.runs.schemas import RetryRequestSchema, RunDetailSchema, RunListArgs, RunPageSchema, RunSchema
from hub.api.security import auth_required, owned_or_404
from hub.models import Run
from hub.services import runs as run_service
from hub.services.runs import run_detail, run_summary

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Runs and their nodes")


def get_run(run_id: int) -> Run:
    return owned_or_404(Run, run_id, "run_not_found", "run")


@blp.route("")
class Runs(MethodView):
    @auth_required()
    @blp.arguments(RunListArgs, location="query")
    @blp.response(200, RunPageSchema)
    def get(self, args):
        """List runs, newest first; filter by flow_id and status"""
        query = Run.select().where(Run.workspace == g.principal.workspace_id).order_by(Run.id.desc())
        if args.get("flow_id"):
            query = query.where(Run.flow == args["flow_id"])
        if args.get("status"):
            query = query.where(Run.status == args["status"])
        return page_of(query, args, run_summary)


@blp.route("/<int:run_id>")
class RunById(MethodView):
    @auth_required()
    @blp.response(200, RunDetailSchema)
    def get(self, run_id):
        """A run with every node's status, attempts, output and error"""
        return run_detail(get_run(run_id))


# --- run control -----------------------------------------------------------------------------------


def actor() -> str:
    """Who asked, for the run's event log."""
    p = g.principal
    return f"api_key:{p.api_key_id}" if getattr(p, "api_key_id", None) else f"user:{p.user_id}"


def _ring(bells) -> None:
    current_app.extensions["hookhub"].ring(bells)


CONFLICT = "the run's state does not allow this (`code` says why)"


@blp.route("/<int:run_id>/cancel")
class RunCancel(MethodView):
    @auth_required("editor")
    @blp.response(200, RunSchema)
    @blp.alt_response(409, description=CONFLICT)
    def post(self, run_id):
        """Cancel a running or paused run

        Every node not yet finished becomes `cancelled` at once; running attempts are killed in
        whichever worker runs them (within about a second) and their late results are discarded.
        A finished run answers 409 `run_finished`.
        """
        return run_summary(run_service.cancel(get_run(run_id), actor()))


@blp.route("/<int:run_id>/pause")
class RunPause(MethodView):
    @auth_required("editor")
    @blp.response(200, RunSchema)
    @blp.alt_response(409, description=CONFLICT)
    def post(self, run_id):
        """Pause a running run: no new attempt starts; running ones finish and are recorded

        A run that is not running answers 409 `run_not_running`.
        """
        return run_summary(run_service.pause(get_run(run_id), actor()))


@blp.route("/<int:run_id>/resume")
class RunResume(MethodView):
    @auth_required("editor")
    @blp.response(202, RunSchema)
    @blp.alt_response(409, description=CONFLICT)
    def post(self, run_id):
        """Resume a paused run; ready nodes start again, waiting retries keep their due time

        A run that is not paused answers 409 `run_not_paused`.
        """
        run, bells = run_service.resume(get_run(run_id), actor())
        _ring(bells)
        return run_summary(run)


@blp.route("/<int:run_id>/retry")
class RunRetry(MethodView):
    @auth_required("editor")
    @blp.arguments(RetryRequestSchema, required=False)
    @blp.response(202, RunSchema)
    @blp.alt_response(409, description=CONFLICT)
    def post(self, args, run_id):
        """Retry a failed or cancelled run from its failed nodes, under the same run id

        The failed and cancelled nodes (or only `nodes`, if given) and the nodes their failure
        skipped run again; nodes that succeeded keep their outputs and are not run again. Attempt
        numbers continue, so every attempt keeps a unique idempotency key, and each retried node
        gets its retry policy afresh. 409 codes: `run_not_finished`, `run_succeeded`,
        `nothing_to_retry`, `node_not_failed`, `node_not_found`.
        """
        run, bells = run_service.retry(get_run(run_id), (args or {}).get("nodes"), actor())
        _ring(bells)
        return run_summary(run)
