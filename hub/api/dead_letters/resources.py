"""Dead letters: nodes that gave up (attempts exhausted or a fatal error); list them and re-drive them."""

from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.dead_letters.schemas import DeadLetterListArgs, DeadLetterPageSchema, DeadLetterSchema
from hub.api.pagination import page_of
from hub.api.runs.resources import actor
from hub.api.security import auth_required, owned_or_404
from hub.models import DeadLetter
from hub.services import runs as run_service

blp = Blueprint("dead_letters", __name__, url_prefix="/api/v1/dead-letters",
                description="Nodes that will not be attempted again, and their re-drive")


def get_letter(letter_id: int) -> DeadLetter:
    return owned_or_404(DeadLetter, letter_id, "dead_letter_not_found", "dead letter")


@blp.route("")
class DeadLetters(MethodView):
    @auth_required()
    @blp.arguments(DeadLetterListArgs, location="query")
    @blp.response(200, DeadLetterPageSchema)
    def get(self, args):
        """List dead letters, newest first; filter by status, flow_id and run_id"""
        query = (DeadLetter.select().where(DeadLetter.workspace == g.principal.workspace_id)
                 .order_by(DeadLetter.id.desc()))
        if args.get("status"):
            query = query.where(DeadLetter.status == args["status"])
        if args.get("flow_id"):
            query = query.where(DeadLetter.flow == args["flow_id"])
        if args.get("run_id"):
            query = query.where(DeadLetter.run == args["run_id"])
        return page_of(query, args, run_service.dead_letter_doc)


@blp.route("/<int:letter_id>")
class DeadLetterById(MethodView):
    @auth_required()
    @blp.response(200, DeadLetterSchema)
    def get(self, letter_id):
        """One dead letter"""
        return run_service.dead_letter_doc(get_letter(letter_id))


@blp.route("/<int:letter_id>/retry")
class DeadLetterRetry(MethodView):
    @auth_required("editor")
    @blp.response(202, DeadLetterSchema)
    @blp.alt_response(409, description="already re-driven (`dead_letter_redriven`), the run succeeded "
                      "(`run_succeeded`) or the node is no longer failed (`node_not_failed`)")
    def post(self, letter_id):
        """Re-drive a dead letter: its node runs again in its run, with a fresh retry policy

        The nodes its failure skipped run again too; a finished run goes back to `running`. Attempt
        numbers continue, so keys stay unique. If it fails again, a new dead letter is recorded.
        """
        letter, bells = run_service.redrive(get_letter(letter_id), actor())
        current_app.extensions["hookhub"].ring(bells)
        return run_service.dead_letter_doc(letter)
