"""hub.db.Prepared: statements compiled once per database give what peewee's own path gives."""

from __future__ import annotations

import datetime as dt

from hub.db import Prepared, db, param, write_transaction
from hub.models import Flow, FlowVersion, Workspace

_INSERT = Prepared(lambda: FlowVersion.insert({
    FlowVersion.flow: param("flow", FlowVersion.flow), FlowVersion.version: param("version"),
    FlowVersion.document: param("document", FlowVersion.document),
    FlowVersion.created_at: param("at", FlowVersion.created_at)}).returning(FlowVersion.id))
_SELECT = Prepared(lambda: FlowVersion.select().where(FlowVersion.flow == param("flow")).order_by(FlowVersion.version))
_UPDATE = Prepared(lambda: FlowVersion.update(document=param("document", FlowVersion.document))
                   .where((FlowVersion.flow == param("flow")) & (FlowVersion.version == param("version"))))

DOCUMENTS = [{"nested": {"a": [1, 2.5, None, True]}, "text": "é ✓ \"q\""}, [1, "two"], "plain", 7, False, {}]


def test_values_round_trip_as_through_peewee(any_hub) -> None:
    at = dt.datetime(2026, 11, 25, 13, 30, 1, 123456)
    with write_transaction():
        flow = Flow.create(workspace=Workspace.create(name="w"), name="f")
        ids = [_INSERT.rows(flow=flow.id, version=i, document=doc, at=at)[0].id
               for i, doc in enumerate(DOCUMENTS, 1)]
    assert len(set(ids)) == len(DOCUMENTS)
    # read back through peewee's own path and through the prepared one: the same values, typed
    for rows in (list(FlowVersion.select().where(FlowVersion.flow == flow.id).order_by(FlowVersion.version)),
                 _SELECT.rows(flow=flow.id)):
        assert [r.document for r in rows] == DOCUMENTS
        assert [r.created_at for r in rows] == [at] * len(DOCUMENTS)
        assert [r.flow_id for r in rows] == [flow.id] * len(DOCUMENTS)
    with write_transaction():
        assert _UPDATE.execute(document={"changed": 1}, flow=flow.id, version=1) == 1
        assert _UPDATE.execute(document=None, flow=flow.id, version=99) == 0
    assert FlowVersion.get((FlowVersion.flow == flow.id) & (FlowVersion.version == 1)).document == {"changed": 1}


def test_compiled_once_per_database_in_its_dialect(any_hub) -> None:
    sql, params = _SELECT.bind(flow=41)
    assert _SELECT.bind(flow=42) == (sql, [42])  # the same text, bound afresh
    assert params == [41]
    placeholder = "%s" if any_hub.settings.database_url.startswith("postgres") else "?"
    assert placeholder in sql
    assert _SELECT._compiled[db.obj][1] is sql  # cached under this database
