"""Runs: list with filters, read one with every node's state."""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.pagination import page_of
from hub.api.runs.schemas import RunDetailSchema, RunListArgs, RunPageSchema
from hub.api.security import auth_required
from hub.models import Run
from hub.services.runs import run_detail, run_summary

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Runs and their nodes")


def get_run(run_id: int) -> Run:
    run = Run.get_or_none((Run.id == run_id) & (Run.workspace == g.principal.workspace_id))
    if run is None:
        raise ApiError(404, "run_not_found", f"no run with id {run_id}")
    return run


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
