"""Creating and versioning flows. Every update writes a new immutable version."""

from __future__ import annotations

from typing import Any

import peewee
import yaml

from hub.api.errors import ApiError
from hub.db import write_transaction
from hub.engine import FlowInvalid, parse_flow
from hub.models import Flow, FlowVersion, utcnow

YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}


def decode_document(raw: bytes, content_type: str | None) -> Any:
    """A flow document from a JSON or YAML body (YAML is a superset of JSON, so either parses)."""
    if not raw.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send a flow document as JSON or YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_body", "the request body is not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        kind = "YAML" if (content_type or "").split(";")[0].strip() in YAML_TYPES else "JSON or YAML"
        raise ApiError(400, "malformed_body", f"the request body is not valid {kind}{where}") from None


def validate_document(doc: Any, catalog) -> None:
    try:
        parse_flow(doc, catalog)
    except FlowInvalid as exc:
        problems = [p.to_dict() for p in exc.problems]
        summary = "; ".join(f"{p['path'] or '<document>'}: {p['message']}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ApiError(422, "invalid_flow", f"the flow document is invalid: {summary}{more}",
                       problems) from None


def create_flow(workspace_id: int, doc: Any, catalog) -> Flow:
    validate_document(doc, catalog)
    try:
        with write_transaction():
            flow = Flow.create(workspace=workspace_id, name=doc["name"], latest_version=1)
            FlowVersion.create(flow=flow, version=1, document=doc)
    except peewee.IntegrityError:
        raise ApiError(409, "flow_exists", f'a flow named "{doc["name"]}" already exists in this workspace; '
                       "update it with PUT /api/v1/flows/{id}") from None
    return flow


def update_flow(flow: Flow, doc: Any, catalog) -> Flow:
    validate_document(doc, catalog)
    try:
        with write_transaction():
            current = Flow.get_by_id(flow.id)
            version = current.latest_version + 1
            FlowVersion.create(flow=flow.id, version=version, document=doc)
            Flow.update(name=doc["name"], latest_version=version, updated_at=utcnow()).where(
                Flow.id == flow.id).execute()
    except peewee.IntegrityError:
        raise ApiError(409, "flow_exists", f'a flow named "{doc["name"]}" already exists in this workspace') from None
    return Flow.get_by_id(flow.id)


def get_version(flow: Flow, version: int | None = None) -> FlowVersion:
    return FlowVersion.get((FlowVersion.flow == flow.id) & (FlowVersion.version == (version or flow.latest_version)))
