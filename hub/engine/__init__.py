"""The pure engine core: flow documents → DAGs, the node/run state machine, templates, retry decisions.

No Flask, Huey or SQL here: these functions take state in and give decisions out.
"""

from .flow import (
    ConnectorCatalog,
    Edge,
    Flow,
    FlowInvalid,
    Node,
    Problem,
    RetryPolicy,
    parse_flow,
)
from .retry import RETRY_AFTER_CAP_SECONDS, RetryDecision, decide_retry, idempotency_key
from .state import (
    NODE_TERMINAL,
    RUN_TERMINAL,
    TERMINAL,
    Advance,
    IllegalTransition,
    NodeStatus,
    RunStatus,
    advance,
    can_transition,
    check_transition,
    initial_statuses,
    run_outcome,
)
from .templates import TemplateError, is_template, referenced_names, references, render

__all__ = [
    "NODE_TERMINAL",
    "RETRY_AFTER_CAP_SECONDS",
    "RUN_TERMINAL",
    "TERMINAL",
    "Advance",
    "ConnectorCatalog",
    "Edge",
    "Flow",
    "FlowInvalid",
    "IllegalTransition",
    "Node",
    "NodeStatus",
    "Problem",
    "RetryDecision",
    "RetryPolicy",
    "RunStatus",
    "TemplateError",
    "advance",
    "can_transition",
    "check_transition",
    "decide_retry",
    "idempotency_key",
    "initial_statuses",
    "is_template",
    "parse_flow",
    "referenced_names",
    "references",
    "render",
    "run_outcome",
]
