"""The built-in ``csv`` connector: parse CSV text into rows, or write rows as CSV text.

``operation: parse`` reads ``text`` with the standard ``csv`` module, one row at a time, so memory is
bounded by the rows kept (at most ``max_rows``), not by the rows read. ``operation: write`` turns
``rows`` (objects or arrays) into ``text``.

Both apply the same optional steps to each row, in this order: ``filter`` (keep rows for which an
expression is true), ``map`` (set columns to expressions), ``select`` (keep and order columns),
``rename``. Expressions are Jinja expressions evaluated by the hub's sandboxed template
environment (``hub.engine.templates``) *inside the connector's sandbox*, with ``row`` (the row as
an object), ``index`` (0-based position among the rows read) and ``input`` (the node's input) in
scope. Write them **without** ``{{ }}`` in a flow — ``filter: "row.amount > 10"`` — because the
runtime renders ``{{ }}`` before the connector sees its config (a string that still arrives as one
``{{ expr }}``, e.g. through ``{% raw %}``, is accepted too).

Malformed input is a :class:`~hub.sdk.ConnectorError` naming the line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from hub.sdk import Connector, ConnectorError, Context, hookimpl

__all__ = ["Csv", "hookhub_connectors"]

DEFAULT_MAX_ROWS = 10_000
MAX_ROWS = 1_000_000
SNIFF_BYTES = 64 * 1024
MAX_FIELD_CHARS = 1024 * 1024
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_BRACES = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)

csv.field_size_limit(MAX_FIELD_CHARS)


def _expression_syntax(value: str) -> None:
    from hub.engine.templates import env

    try:
        env.compile_expression(_strip_braces(value))
    except Exception as exc:
        raise ValidationError(f"Not a valid expression: {exc}.") from exc


def _one_char(value: str) -> None:
    if len(value) != 1 or value in "\r\n\"":
        raise ValidationError("Must be one character (not a quote or a line break).")


class Csv(Connector):
    """Parse or write CSV."""

    name = "csv"
    version = "1.0.0"
    description = "Parse CSV text into rows or write rows as CSV; filter, map, select and rename columns."
    permissions = {"network": False}

    class Config(Connector.Config):
        operation = fields.String(load_default="parse", validate=validate.OneOf(["parse", "write"]))
        text = fields.String(metadata={"description": "parse: the CSV text."})
        rows = fields.List(
            fields.Raw(), metadata={"description": "write: the rows, each an object or an array."}
        )
        delimiter = fields.String(
            validate=_one_char, metadata={"description": "Default: sniffed (parse), ',' (write)."}
        )
        quotechar = fields.String(load_default='"', validate=validate.Length(equal=1))
        header = fields.Boolean(
            load_default=True,
            metadata={"description": "parse: the first line names the columns; write: write a header line."},
        )
        columns = fields.List(
            fields.String(),
            metadata={"description": "parse: column names when header is false; write: column order."},
        )
        infer_types = fields.Boolean(
            load_default=False,
            metadata={"description": "parse: turn integers, decimals and true/false into numbers and booleans."},
        )
        strict = fields.Boolean(
            load_default=True,
            metadata={"description": "parse: a row with more or fewer fields than the header is an error."},
        )
        skip_empty_lines = fields.Boolean(load_default=True)
        filter = fields.String(
            validate=_expression_syntax,
            metadata={"description": "Keep rows for which this expression is true, e.g. row.amount > 10."},
        )
        map = fields.Dict(
            keys=fields.String(),
            values=fields.String(validate=_expression_syntax),
            metadata={"description": "Set columns to expressions, e.g. {total: 'row.price * row.qty'}."},
        )
        select = fields.List(fields.String(), metadata={"description": "Keep only these columns, in this order."})
        rename = fields.Dict(keys=fields.String(), values=fields.String(), metadata={"description": "old: new"})
        max_rows = fields.Integer(
            load_default=DEFAULT_MAX_ROWS,
            validate=validate.Range(min=1, max=MAX_ROWS),
            metadata={"description": "Fail when more rows than this would be kept."},
        )
        line_terminator = fields.String(
            load_default="\r\n", validate=validate.OneOf(["\r\n", "\n"]), metadata={"description": "write"}
        )

        @validates_schema
        def _operands(self, data: dict[str, Any], **_: Any) -> None:
            op = data.get("operation", "parse")
            if op == "parse" and "text" not in data:
                raise ValidationError("Required when operation is parse.", "text")
            if op == "write" and "rows" not in data:
                raise ValidationError("Required when operation is write.", "rows")

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        cfg = config  # validated and loaded (defaults filled in) by the sandbox
        steps = _Steps(cfg, ctx.input)
        if cfg["operation"] == "parse":
            rows, columns = _parse(cfg, steps)
            ctx.log.info("parsed %d row(s)", len(rows))
            return {"rows": rows, "count": len(rows), "columns": columns}
        text, count = _write(cfg, steps)
        ctx.log.info("wrote %d row(s)", count)
        return {"text": text, "count": count}


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Csv]


# --- row steps -------------------------------------------------------------------------------


def _strip_braces(source: str) -> str:
    match = _BRACES.match(source)
    return match.group(1) if match else source


class _Steps:
    """filter → map → select → rename, compiled once."""

    def __init__(self, cfg: dict[str, Any], node_input: Any) -> None:
        from hub.engine.templates import env

        def compile_(source: str) -> Callable[..., Any]:
            return env.compile_expression(_strip_braces(source), undefined_to_none=False)

        self.input = node_input
        self.filter = (cfg["filter"], compile_(cfg["filter"])) if cfg.get("filter") else None
        self.map = [(k, v, compile_(v)) for k, v in (cfg.get("map") or {}).items()]
        self.select = cfg.get("select")
        self.rename = cfg.get("rename") or {}

    @property
    def active(self) -> bool:
        return bool(self.filter or self.map or self.select or self.rename)

    def apply(self, row: dict[str, Any], index: int, where: str) -> dict[str, Any] | None:
        scope = {"row": row, "index": index, "input": self.input}
        if self.filter is not None:
            source, expr = self.filter
            if not _truthy(self._eval(expr, scope, f"filter {source!r}", where)):
                return None
        if self.map:
            row = dict(row)
            for column, source, expr in self.map:
                row[column] = self._eval(expr, scope, f"map.{column} {source!r}", where)
        if self.select is not None:
            missing = [c for c in self.select if c not in row]
            if missing:
                raise ConnectorError(f"csv: {where}: select names unknown column(s) {missing}; have {list(row)}")
            row = {c: row[c] for c in self.select}
        if self.rename:
            row = {self.rename.get(k, k): v for k, v in row.items()}
        return row

    def columns(self, columns: list[str]) -> list[str]:
        out = list(columns)
        for column, _, _ in self.map:
            if column not in out:
                out.append(column)
        if self.select is not None:
            out = list(self.select)
        return [self.rename.get(c, c) for c in out]

    @staticmethod
    def _eval(expr: Callable[..., Any], scope: dict[str, Any], what: str, where: str) -> Any:
        from jinja2.runtime import Undefined

        try:
            value = expr(**scope)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
        except Exception as exc:
            hint = ""
            if isinstance(exc, TypeError) and "str" in str(exc):
                hint = " (values are text unless infer_types: true; or convert with | int / | float)"
            raise ConnectorError(f"csv: {where}: {what} failed: {type(exc).__name__}: {exc}{hint}") from exc
        return value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off", "none", "null")
    return bool(value)


# --- parse -----------------------------------------------------------------------------------


def _infer(value: str) -> Any:
    text = value.strip()
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return value


def _dialect(cfg: dict[str, Any], text: str) -> dict[str, Any]:
    options: dict[str, Any] = {"quotechar": cfg["quotechar"], "strict": True}
    if cfg.get("delimiter"):
        options["delimiter"] = cfg["delimiter"]
        return options
    try:
        sniffed = csv.Sniffer().sniff(text[:SNIFF_BYTES], delimiters=",;\t|")
        options["delimiter"] = sniffed.delimiter
    except csv.Error:
        options["delimiter"] = ","
    return options


def _records(cfg: dict[str, Any], text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per record, from the streaming reader; csv.Error names its line."""
    reader = csv.reader(io.StringIO(text, newline=""), **_dialect(cfg, text))
    while True:
        try:
            fields_ = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConnectorError(f"csv: malformed CSV at line {reader.line_num}: {exc}") from exc
        if cfg["skip_empty_lines"] and (not fields_ or fields_ == [""]):
            continue
        yield reader.line_num, fields_


def _parse(cfg: dict[str, Any], steps: _Steps) -> tuple[list[Any], list[str]]:
    records = _records(cfg, cfg["text"])
    columns: list[str] | None = cfg.get("columns")
    if cfg["header"]:
        first = next(records, None)
        if first is None:
            return [], columns or []
        line, header = first
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise ConnectorError(f"csv: line {line}: the header names column(s) {dupes} more than once")
        columns = header
    infer, strict, limit = cfg["infer_types"], cfg["strict"], cfg["max_rows"]
    rows: list[Any] = []
    for index, (line, values) in enumerate(records):
        if columns is not None and len(values) != len(columns):
            if strict:
                raise ConnectorError(
                    f"csv: line {line} has {len(values)} field(s) but the header has {len(columns)} "
                    "(strict: false pads or drops them)"
                )
            values = (values + [""] * len(columns))[: len(columns)]
        typed: list[Any] = [_infer(v) for v in values] if infer else list(values)
        if columns is None:
            if steps.active:
                raise ConnectorError("csv: filter/map/select/rename need column names: set header or columns")
            row: Any = typed
        else:
            row = steps.apply(dict(zip(columns, typed, strict=True)), index, f"line {line}")
            if row is None:
                continue
        if len(rows) >= limit:
            raise ConnectorError(
                f"csv: more than max_rows={limit} rows (at line {line}); raise max_rows or filter rows"
            )
        rows.append(row)
    return rows, steps.columns(columns) if columns is not None else []


# --- write -----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _write(cfg: dict[str, Any], steps: _Steps) -> tuple[str, int]:
    rows = cfg["rows"]
    if len(rows) > cfg["max_rows"]:
        raise ConnectorError(f"csv: {len(rows)} rows is more than max_rows={cfg['max_rows']}")
    columns: list[str] | None = cfg.get("columns")
    prepared: list[dict[str, Any]] = []
    arrays = False
    for index, row in enumerate(rows):
        if isinstance(row, list):
            arrays = True
            if columns is None:
                if steps.active:
                    raise ConnectorError("csv: filter/map/select/rename of array rows need `columns`")
                prepared.append(dict(enumerate(row)))  # type: ignore[arg-type]
                continue
            row = dict(zip(columns, row, strict=False))
        elif not isinstance(row, dict):
            raise ConnectorError(f"csv: rows[{index}] is {type(row).__name__}; each row must be an object or array")
        kept = steps.apply(row, index, f"rows[{index}]")
        if kept is not None:
            prepared.append(kept)

    out = io.StringIO()
    writer = csv.writer(
        out,
        delimiter=cfg.get("delimiter") or ",",
        quotechar=cfg["quotechar"],
        lineterminator=cfg["line_terminator"],
    )
    if arrays and columns is None:
        for row in prepared:
            writer.writerow([_cell(row[i]) for i in sorted(row)])
        return out.getvalue(), len(prepared)

    if columns is not None:
        names = steps.columns(columns)
    else:
        names = []
        seen: set[str] = set()
        for row in prepared:  # every column any row has, in first-seen order
            for key in row:
                if key not in seen:
                    seen.add(key)
                    names.append(key)
    if cfg["header"]:
        writer.writerow(names)
    for row in prepared:
        writer.writerow([_cell(row.get(name)) for name in names])
    return out.getvalue(), len(prepared)
