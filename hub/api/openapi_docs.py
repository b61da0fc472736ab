"""The error half of the OpenAPI document: every operation says which problems it can answer with.

flask-smorest documents success responses and a ``default`` error; this adds, once all blueprints are
registered, the problem+json responses every authenticated route can give (401, 403, 404, 429) and the
400/413/415/422 that bad input gives, each with an example, so clients and fuzzers know the whole
contract.
"""

from __future__ import annotations

from flask_smorest import Api

from hub.api.errors import PROBLEM_MIMETYPE

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_ERRORS = {
    "BadRequest": (400, "bad_request", "the request is malformed (a header, the body's encoding or syntax)"),
    "Unauthorized": (401, "unauthorized", "no, invalid, expired or revoked credentials; `code` says which"),
    "Forbidden": (403, "forbidden", "your role in the workspace is too low for this"),
    "NotFound": (404, "not_found", "not found in your workspace; other workspaces' objects are never revealed"),
    "Conflict": (409, "conflict", "the change conflicts with what exists (a duplicate name, the last admin)"),
    "PayloadTooLarge": (413, "payload_too_large", "the body is larger than the server accepts"),
    "UnsupportedMediaType": (415, "unsupported_media_type", "the body's content type is not accepted"),
    "ValidationError": (422, "validation_error", "the input is invalid; `errors` maps each path to its problems"),
    "RateLimited": (429, "rate_limited", "too many requests; `Retry-After` says when to try again"),
    "InternalError": (500, "internal_error", "a bug: the server log has the details (with the X-Request-Id)"),
}


def _response(status: int, code: str, description: str) -> dict:
    example = {"status": status, "code": code, "message": description}
    if status == 422:
        example["errors"] = {"name": ["Missing data for required field."]}
    doc = {"description": description,
           "content": {PROBLEM_MIMETYPE: {"schema": _PROBLEM, "example": example}},
           "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}}
    if status == 429:
        doc["headers"]["Retry-After"] = {"description": "seconds to wait", "schema": {"type": "integer"}}
    if status == 401:
        doc["headers"]["WWW-Authenticate"] = {"description": "the scheme to use", "schema": {"type": "string"}}
    return doc


def _problem_content(status: str, response: dict) -> None:
    """Error answers are problem+json (hub.api.errors): say so where a route documented application/json."""
    content = response.get("content") if isinstance(response, dict) else None
    if not status.isdigit() or int(status) < 400 or not content or "application/json" not in content:
        return
    if PROBLEM_MIMETYPE not in content:
        content[PROBLEM_MIMETYPE] = content.pop("application/json")


def document_errors(api: Api) -> None:
    components = api.spec.components
    components.header("X-Request-Id", {
        "description": "this request's id (an incoming X-Request-Id is kept); it is in the server's log lines",
        "schema": {"type": "string"}})
    for name, (status, code, description) in _ERRORS.items():
        components.response(name, _response(status, code, description))
    # flask-smorest's own error responses: our handlers answer problem+json, never its Error schema.
    for name in ("DEFAULT_ERROR", "UNPROCESSABLE_ENTITY"):
        if name in components.responses:
            components.responses[name]["content"] = {PROBLEM_MIMETYPE: {"schema": _PROBLEM}}
    by_status = {status: name for name, (status, _, _) in _ERRORS.items()}
    for path, item in api.spec._paths.items():
        api_route = path.startswith("/api/")
        for method, operation in item.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            wanted = {500}
            if api_route:
                wanted |= {400, 429}
            if operation.get("security"):
                wanted |= {401, 403, 404}
            if "{" in path:
                wanted.add(404)
            if operation.get("requestBody") or method in {"post", "put", "patch"}:
                wanted |= {413, 415, 422}
            if method in {"post", "put"}:
                wanted.add(409)
            if any(p.get("in") == "query" for p in operation.get("parameters", [])) or \
                    any(p.get("in") == "query" for p in item.get("parameters", [])):
                wanted.add(422)
            for key, response in responses.items():
                _problem_content(key, response)
            for status in sorted(wanted):
                key = str(status)
                if key not in responses:
                    responses[key] = {"$ref": f"#/components/responses/{by_status[status]}"}
