"""Flows: create (JSON or YAML), list, read, update (new version), delete, validate, run."""

from __future__ import annotations

import yaml
from flask import Response, current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.flows.schemas import (
    FLOW_BODY_DOC,
    DuplicateSchema,
    ExportArgs,
    FlowListArgs,
    FlowPageSchema,
    FlowSchema,
    FlowStatsSchema,
    FlowVersionPageSchema,
    ImportArgs,
    RunRequestSchema,
    ValidationResultSchema,
)
from hub.api.pagination import PageArgs, page_of
from hub.api.runs.schemas import RunSchema
from hub.api.security import auth_required, owned_or_404
from hub.engine import FlowInvalid, parse_flow
from hub.models import Flow, FlowVersion, iso
from hub.services import flow_management
from hub.services import flows as flow_service
from hub.services.runs import run_summary, start_manual_run

blp = Blueprint("flows", __name__, url_prefix="/api/v1/flows", description="Flows and their versions")


def _hub():
    return current_app.extensions["hookhub"]



def flow_doc(flow: Flow, version: FlowVersion | None = None) -> dict:
    version = version or flow_service.get_version(flow)
    return {"id": flow.id, "name": flow.name, "version": flow.latest_version, "document": version.document,
            "created_at": iso(flow.created_at), "updated_at": iso(flow.updated_at)}


def get_flow(flow_id: int) -> Flow:
    return owned_or_404(Flow, flow_id, "flow_not_found", "flow")


def _document():
    return flow_service.decode_document(request.get_data(cache=True), request.content_type)


@blp.route("")
class Flows(MethodView):
    @auth_required()
    @blp.arguments(FlowListArgs, location="query")
    @blp.response(200, FlowPageSchema)
    def get(self, args):
        """List flows"""
        query = Flow.select().where(Flow.workspace == g.principal.workspace_id).order_by(Flow.id)
        if args.get("name"):
            query = query.where(Flow.name == args["name"])
        return page_of(query, args, flow_doc)

    @auth_required("editor")
    @blp.doc(**FLOW_BODY_DOC)
    @blp.response(201, FlowSchema)
    @blp.alt_response(422, schema="Problem", description="invalid flow document; `errors` lists every problem")
    def post(self):
        """Create a flow from a JSON or YAML document"""
        flow = flow_service.create_flow(g.principal.workspace_id, _document(), _hub().registry)
        return flow_doc(flow)


@blp.route("/validate")
class Validate(MethodView):
    @auth_required()
    @blp.doc(**FLOW_BODY_DOC)
    @blp.response(200, ValidationResultSchema)
    def post(self):
        """Check a flow document without saving it; lists every problem with its path"""
        try:
            parse_flow(_document(), _hub().registry)
        except FlowInvalid as exc:
            return {"valid": False, "problems": [p.to_dict() for p in exc.problems]}
        return {"valid": True, "problems": []}


@blp.route("/<int:flow_id>")
class FlowById(MethodView):
    @auth_required()
    @blp.response(200, FlowSchema)
    def get(self, flow_id):
        """Read a flow (its latest version)"""
        return flow_doc(get_flow(flow_id))

    @auth_required("editor")
    @blp.doc(**FLOW_BODY_DOC)
    @blp.response(200, FlowSchema)
    def put(self, flow_id):
        """Replace a flow's document: writes a new immutable version"""
        flow = flow_service.update_flow(get_flow(flow_id), _document(), _hub().registry)
        return flow_doc(flow)

    @auth_required("editor")
    @blp.response(204)
    def delete(self, flow_id):
        """Delete a flow with its versions, triggers and runs"""
        get_flow(flow_id).delete_instance(recursive=False)


@blp.route("/<int:flow_id>/versions")
class FlowVersions(MethodView):
    @auth_required()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, FlowVersionPageSchema)
    def get(self, args, flow_id):
        """List a flow's versions, newest first"""
        flow = get_flow(flow_id)
        query = FlowVersion.select().where(FlowVersion.flow == flow.id).order_by(FlowVersion.version.desc())
        return page_of(query, args, lambda v: {"version": v.version, "document": v.document,
                                               "created_at": iso(v.created_at)})


@blp.route("/<int:flow_id>/runs")
class FlowRuns(MethodView):
    @auth_required("editor")
    @blp.arguments(RunRequestSchema)
    @blp.response(202, RunSchema)
    def post(self, body, flow_id):
        """Start a run by hand; `payload` becomes `trigger.body`"""
        flow = get_flow(flow_id)
        if body.get("version") and not FlowVersion.select().where(
                (FlowVersion.flow == flow.id) & (FlowVersion.version == body["version"])).exists():
            raise ApiError(404, "version_not_found", f"flow {flow_id} has no version {body['version']}")
        run, bells = start_manual_run(flow, body.get("payload"), version=body.get("version"))
        _hub().ring(bells)
        return run_summary(run)


# --- security/management (issue #7): duplicate, export, import, stats -------------------------------

YAML_BODY_DOC = {"responses": {"200": {
    "description": "the flow document as YAML (an attachment named after the flow)",
    "content": {"application/yaml": {"schema": {"type": "object", "description": "a flow document (SPEC §3)"},
                                     "example": "name: hello\nnodes:\n- id: get\n  connector: http\n"}}}}}


@blp.route("/<int:flow_id>/duplicate")
class FlowDuplicate(MethodView):
    @auth_required("editor")
    @blp.arguments(DuplicateSchema)
    @blp.response(201, FlowSchema)
    def post(self, body, flow_id):
        """Copy a flow's latest document into a new flow (no triggers, no runs)"""
        source = get_flow(flow_id)
        flow = flow_management.duplicate_flow(source, body.get("name"), _hub().registry)
        return flow_doc(flow)


@blp.route("/<int:flow_id>/export")
class FlowExport(MethodView):
    @auth_required()
    @blp.arguments(ExportArgs, location="query")
    @blp.doc(**YAML_BODY_DOC)
    def get(self, args, flow_id):
        """Export a flow's document as YAML (re-import it with POST /api/v1/flows/import)"""
        flow = get_flow(flow_id)
        version = FlowVersion.get_or_none((FlowVersion.flow == flow.id)
                                          & (FlowVersion.version == (args["version"] or flow.latest_version)))
        if version is None:
            raise ApiError(404, "version_not_found", f"flow {flow_id} has no version {args['version']}")
        text = yaml.safe_dump(version.document, sort_keys=False, allow_unicode=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in flow.name)[:100] or "flow"
        return Response(text, mimetype="application/yaml", headers={
            "Content-Disposition": f'attachment; filename="{safe}.yaml"'})


@blp.route("/import")
class FlowImport(MethodView):
    @auth_required("editor")
    @blp.arguments(ImportArgs, location="query")
    @blp.doc(**FLOW_BODY_DOC)
    @blp.response(201, FlowSchema)
    @blp.alt_response(200, schema=FlowSchema, description="replaced: the existing flow's new version")
    def post(self, args, **_):
        """Import a flow document (YAML or JSON, e.g. from export); `replace=true` updates a flow of that name"""
        doc = _document()
        flow_service.validate_document(doc, _hub().registry)
        existing = Flow.get_or_none((Flow.workspace == g.principal.workspace_id) & (Flow.name == doc["name"]))
        if existing is not None and args["replace"]:
            return flow_doc(flow_service.update_flow(existing, doc, _hub().registry)), 200
        return flow_doc(flow_service.create_flow(g.principal.workspace_id, doc, _hub().registry)), 201


@blp.route("/<int:flow_id>/stats")
class FlowStats(MethodView):
    @auth_required()
    @blp.response(200, FlowStatsSchema)
    def get(self, flow_id):
        """Per-flow statistics: runs by status and run durations"""
        return flow_management.flow_stats(get_flow(flow_id))
