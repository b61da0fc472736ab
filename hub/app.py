"""The Flask application factory: the only place configuration enters the web app."""

from __future__ import annotations

from typing import Any

from flask import Flask, send_from_directory
from flask_smorest import Api
from openapi_ui_bundles import swagger_ui

from hub import __version__
from hub.api.errors import ProblemSchema, register_error_handlers
from hub.api.security import SECURITY_SCHEMES
from hub.config import Settings, load_settings
from hub.core import Hub


def create_app(settings: Settings | None = None, *, hub: Hub | None = None,
               test_config: dict[str, Any] | None = None) -> Flask:
    settings = settings or (hub.settings if hub else load_settings())
    hub = hub or Hub(settings)
    app = Flask(__name__)
    app.config.update(
        API_TITLE="Hookhub",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # served from the installed openapi-ui-bundles package: /docs works with no internet access
        OPENAPI_SWAGGER_UI_URL="/docs-static/",
        MAX_CONTENT_LENGTH=64 << 20,
        JSON_SORT_KEYS=False,
    )
    app.config.update(test_config or {})
    app.extensions["hookhub"] = hub

    api = Api(app, spec_kwargs={
        "info": {"description": "Webhook automation hub: flows, triggers, runs and connectors."},
    })
    for _name, _scheme in SECURITY_SCHEMES.items():  # security (issue #7): bearer tokens and API keys
        api.spec.components.security_scheme(_name, _scheme)
    api.spec.components.schema("Problem", schema=ProblemSchema)
    api.ERROR_SCHEMA = ProblemSchema

    @app.route("/docs-static/<path:filename>")
    def swagger_static(filename: str):
        return send_from_directory(swagger_ui.static_path, filename)

    from hub.api.auth.resources import blp as auth_blp
    from hub.api.flows.resources import blp as flows_blp
    from hub.api.hooks.resources import blp as hooks_blp
    from hub.api.runs.resources import blp as runs_blp
    from hub.api.system.resources import blp as system_blp
    from hub.api.triggers.resources import blp as triggers_blp

    for blp in (system_blp, auth_blp, flows_blp, triggers_blp, runs_blp, hooks_blp):
        api.register_blueprint(blp)
    from hub.api.dead_letters.resources import blp as dead_letters_blp  # engine (issue #3)
    api.register_blueprint(dead_letters_blp)

    register_error_handlers(app)

    # --- security (issue #7): management blueprints, request ids, headers, CORS, rate limits -------
    from hub.api.api_keys.resources import blp as api_keys_blp
    from hub.api.middleware import init_middleware
    from hub.api.openapi_docs import document_errors
    from hub.api.ratelimit import init_rate_limits
    from hub.api.secrets.resources import blp as secrets_blp
    from hub.api.users.resources import blp as users_blp
    from hub.api.workspaces.resources import blp as workspaces_blp

    for blp in (api_keys_blp, secrets_blp, workspaces_blp, users_blp):
        api.register_blueprint(blp)
    init_middleware(app)
    init_rate_limits(app)
    document_errors(api)
    # --- end security ------------------------------------------------------------------------------

    # --- observability (issue #8): live events (SSE), /metrics, /ui ---------------------------------
    from hub.api.events.resources import blp as events_blp
    from hub.api.events.resources import obs_blp

    api.register_blueprint(events_blp)
    api.register_blueprint(obs_blp)
    # --- end observability ---------------------------------------------------------------------------

    @app.teardown_appcontext
    def _close_db(exc):
        from hub.db import db

        if not db.is_closed():
            db.close()

    @app.before_request
    def _open_db():
        from hub.db import db

        db.connect(reuse_if_open=True)

    return app
