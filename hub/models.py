"""peewee models: every fact the hub knows is a row here (the database is the truth).

Timestamps are naive UTC. Schema changes go through ``migrations/`` — never ``create_tables`` at
run time.
"""

from __future__ import annotations

import datetime as dt

from peewee import (
    AutoField,
    BigAutoField,
    BlobField,
    BooleanField,
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    JSONField,
    Model,
    TextField,
)

from hub.db import db


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(value: dt.datetime | None) -> str | None:
    """A stored (naive UTC) timestamp as the API shows it: ISO 8601 with milliseconds and "Z"."""
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Workspace(BaseModel):
    id = AutoField()
    name = CharField(max_length=200)
    created_at = DateTimeField(default=utcnow)


class User(BaseModel):
    id = AutoField()
    email = CharField(max_length=320, unique=True)
    password_hash = CharField(max_length=255)
    is_admin = BooleanField(default=False)
    is_active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)


class Membership(BaseModel):
    id = AutoField()
    user = ForeignKeyField(User, backref="memberships", on_delete="CASCADE")
    workspace = ForeignKeyField(Workspace, backref="memberships", on_delete="CASCADE")
    role = CharField(max_length=16, default="admin")  # admin | editor | viewer

    class Meta:
        indexes = ((("user", "workspace"), True),)


class RefreshToken(BaseModel):
    """A refresh token's hash. A family shares ``family``; reusing a rotated token revokes the family."""

    id = AutoField()
    user = ForeignKeyField(User, on_delete="CASCADE")
    token_hash = CharField(max_length=64, unique=True)
    family = CharField(max_length=32, index=True)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    id = AutoField()
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    user = ForeignKeyField(User, on_delete="CASCADE")
    name = CharField(max_length=200)
    prefix = CharField(max_length=16, index=True)
    key_hash = CharField(max_length=64, unique=True)
    scopes = JSONField(default=list)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class Secret(BaseModel):
    """A workspace secret, encrypted at rest (Fernet under HOOKHUB_SECRET_KEY); values are write-only."""

    id = AutoField()
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    name = CharField(max_length=128)
    ciphertext = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("workspace", "name"), True),)


class Flow(BaseModel):
    id = AutoField()
    workspace = ForeignKeyField(Workspace, backref="flows", on_delete="CASCADE")
    name = CharField(max_length=200)
    latest_version = IntegerField(default=1)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("workspace", "name"), True),)


class FlowVersion(BaseModel):
    """Immutable: every update of a flow writes a new version; runs pin the one they started on."""

    id = AutoField()
    flow = ForeignKeyField(Flow, backref="versions", on_delete="CASCADE")
    version = IntegerField()
    document = JSONField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("flow", "version"), True),)


class Trigger(BaseModel):
    id = AutoField()
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    flow = ForeignKeyField(Flow, backref="triggers", on_delete="CASCADE")
    type = CharField(max_length=16)  # webhook | schedule
    token = CharField(max_length=64, unique=True, null=True)
    config = JSONField(default=dict)
    enabled = BooleanField(default=True)
    #: null follows the flow's latest version
    flow_version = IntegerField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    def run_version(self) -> FlowVersion:
        """The flow version a new run of this trigger uses: its pinned one, else the flow's latest."""
        version = self.flow_version or Flow.get_by_id(self.flow_id).latest_version
        return FlowVersion.get((FlowVersion.flow == self.flow_id) & (FlowVersion.version == version))


class Run(BaseModel):
    id = BigAutoField()
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    flow = ForeignKeyField(Flow, backref="runs", on_delete="CASCADE")
    flow_version = IntegerField()
    trigger = ForeignKeyField(Trigger, null=True, on_delete="SET NULL")
    source = CharField(max_length=16, default="manual")  # manual | webhook | schedule | retry
    status = CharField(max_length=16, index=True)
    trigger_data = JSONField(default=dict)
    output = JSONField(null=True)
    error = TextField(null=True)
    #: per-run event sequence; bumping it also serialises a run's state changes
    event_seq = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow, index=True)
    updated_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)


class Delivery(BaseModel):
    """One inbound webhook request, committed before it is acknowledged."""

    id = BigAutoField()
    trigger = ForeignKeyField(Trigger, backref="deliveries", on_delete="CASCADE")
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    method = CharField(max_length=10)
    headers = JSONField(default=dict)
    query = JSONField(default=dict)
    body = BlobField(null=True)
    content_type = CharField(max_length=200, null=True)
    dedupe_key = CharField(max_length=255, null=True)
    run = ForeignKeyField(Run, null=True, on_delete="SET NULL")
    status = CharField(max_length=16, default="accepted")
    received_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("trigger", "dedupe_key"), True),)


class NodeRun(BaseModel):
    """One node of one run: its state, how many attempts it has used, and its final output."""

    id = BigAutoField()
    run = ForeignKeyField(Run, backref="node_runs", on_delete="CASCADE")
    node_id = CharField(max_length=64)
    status = CharField(max_length=16, index=True)
    attempts = IntegerField(default=0)
    output = JSONField(null=True)
    error = JSONField(null=True)
    #: when a ready node may next be attempted (retries wait here, in the database)
    due_at = DateTimeField(null=True)
    #: when its doorbell was last rung; a reaper rings again if nobody answered
    enqueued_at = DateTimeField(null=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("run", "node_id"), True), (("status", "due_at"), False))


class Attempt(BaseModel):
    """A claimed attempt. ``key`` = sha256(run:node:attempt) is UNIQUE: the same key never runs twice."""

    id = BigAutoField()
    key = CharField(max_length=64, unique=True)
    node_run = ForeignKeyField(NodeRun, backref="attempt_rows", on_delete="CASCADE")
    run = ForeignKeyField(Run, on_delete="CASCADE")
    node_id = CharField(max_length=64)
    number = IntegerField()
    status = CharField(max_length=16, index=True)  # running | succeeded | failed | lost | cancelled
    worker = CharField(max_length=128, null=True)
    lease_expires_at = DateTimeField(null=True, index=True)
    output = JSONField(null=True)
    error = JSONField(null=True)
    started_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)
    duration_ms = FloatField(null=True)


class RunEvent(BaseModel):
    """Append-only event log of a run: the audit trail and the source of live updates."""

    id = BigAutoField()
    run = ForeignKeyField(Run, backref="events", on_delete="CASCADE")
    seq = IntegerField()
    type = CharField(max_length=48)
    node_id = CharField(max_length=64, null=True)
    data = JSONField(default=dict)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("run", "seq"), True),)


ALL_MODELS = [
    Workspace,
    User,
    Membership,
    RefreshToken,
    ApiKey,
    Secret,
    Flow,
    FlowVersion,
    Trigger,
    Run,
    Delivery,
    NodeRun,
    Attempt,
    RunEvent,
]


# --- engine (issue #3): dead letters ----------------------------------------------------------------


class DeadLetter(BaseModel):
    """A node that will not be attempted again (attempts exhausted or a fatal error), kept for re-drive.

    A row of its own rather than a view of failed node runs: it has a stable id to re-drive, keeps
    the error of *that* failure after the node is re-driven, and a node that fails again after a
    re-drive gets a new row, so the history of each give-up stays visible.
    """

    id = BigAutoField()
    workspace = ForeignKeyField(Workspace, on_delete="CASCADE")
    flow = ForeignKeyField(Flow, on_delete="CASCADE")
    run = ForeignKeyField(Run, on_delete="CASCADE")
    node_run = ForeignKeyField(NodeRun, on_delete="CASCADE")
    node_id = CharField(max_length=64)
    attempts = IntegerField()
    error = JSONField(null=True)
    status = CharField(max_length=16, default="open", index=True)  # open | redriven
    created_at = DateTimeField(default=utcnow, index=True)
    redriven_at = DateTimeField(null=True)


ALL_MODELS.append(DeadLetter)


# --- triggers (issue #6): schedule slot claims, token rotation, delivery log ------------------------


class ScheduleSlot(BaseModel):
    """One schedule slot (a UTC instant) of one trigger. UNIQUE (trigger, slot_at) is the claim: it is
    inserted in the same transaction as the slot's run, so a slot fires once however many schedulers run."""

    id = BigAutoField()
    trigger = ForeignKeyField(Trigger, on_delete="CASCADE")
    slot_at = DateTimeField()
    status = CharField(max_length=16, default="fired")  # fired | skipped (a misfire under policy skip)
    run = ForeignKeyField(Run, null=True, on_delete="SET NULL")
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("trigger", "slot_at"), True),)


class TriggerToken(BaseModel):
    """A webhook token still accepted after a rotation, until ``expires_at`` (the overlap window)."""

    id = AutoField()
    trigger = ForeignKeyField(Trigger, on_delete="CASCADE")
    token = CharField(max_length=64, unique=True)
    expires_at = DateTimeField(index=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "webhook_token"  # "trigger_token" is already the name of trigger.token's index


# The delivery log also records refused and duplicate deliveries: what was answered, and why.
Delivery._meta.add_field("status_code", IntegerField(null=True))
Delivery._meta.add_field("error", TextField(null=True))

ALL_MODELS.extend([ScheduleSlot, TriggerToken])


# --- security (issue #7): access tokens revoked before they expire ----------------------------------


class RevokedAccessToken(BaseModel):
    """A logged-out access token's ``jti``: refused until its ``exp``, then safe to delete."""

    id = AutoField()
    jti = CharField(max_length=64, unique=True)
    user = ForeignKeyField(User, on_delete="CASCADE")
    expires_at = DateTimeField(index=True)
    created_at = DateTimeField(default=utcnow)


ALL_MODELS.append(RevokedAccessToken)
