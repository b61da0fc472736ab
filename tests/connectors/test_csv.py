"""The csv connector: parse and write, row steps with template expressions, bounded input, clear errors."""

from __future__ import annotations

import pytest

from connectors.csv import Csv
from hub.sdk import ConnectorError
from hub.testing import ConfigInvalid, run_connector, run_inline

ORDERS = "id;customer;amount;paid\n1;Ada;12.50;true\n2;Bob;7;false\n3;Cy;100;TRUE\n"


def parse(text: str, **config):
    return run_inline(Csv, {"text": text, **config})


def test_parse_sniffs_the_delimiter_and_keeps_text_by_default():
    out = parse(ORDERS)
    assert out["columns"] == ["id", "customer", "amount", "paid"]
    assert out["rows"][0] == {"id": "1", "customer": "Ada", "amount": "12.50", "paid": "true"}
    assert out["count"] == 3


def test_infer_types_filter_map_select_rename():
    out = parse(
        ORDERS,
        infer_types=True,
        filter="row.amount > 10",
        map={"gross": "row.amount * 1.2", "who": "row.customer | upper"},
        select=["id", "who", "gross", "paid"],
        rename={"who": "name"},
    )
    assert out["rows"] == [
        {"id": 1, "name": "ADA", "gross": pytest.approx(15.0), "paid": True},
        {"id": 3, "name": "CY", "gross": pytest.approx(120.0), "paid": True},
    ]
    assert out["columns"] == ["id", "name", "gross", "paid"]


def test_braced_expression_and_input_in_scope():
    out = run_inline(Csv, {"text": ORDERS, "infer_types": True, "filter": "{{ row.amount >= input.min }}"},
                     input={"min": 12})
    assert [r["id"] for r in out["rows"]] == [1, 3]


def test_comparing_text_with_a_number_explains_infer_types():
    with pytest.raises(ConnectorError, match=r"line 2: filter .* failed: TypeError.*infer_types"):
        parse(ORDERS, filter="row.amount > 10")


def test_unknown_column_in_an_expression_names_the_line():
    with pytest.raises(ConnectorError, match=r"line 2: filter 'row.price > 1' failed: UndefinedError"):
        parse(ORDERS, filter="row.price > 1")


def test_no_header_gives_arrays_or_named_columns():
    assert parse("1,2\n3,4\n", header=False)["rows"] == [["1", "2"], ["3", "4"]]
    out = parse("1,2\n3,4\n", header=False, columns=["a", "b"], infer_types=True)
    assert out["rows"] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_quoted_fields_with_delimiters_and_newlines():
    text = 'name,note\n"Smith, J","line one\nline two"\n'
    assert parse(text)["rows"] == [{"name": "Smith, J", "note": "line one\nline two"}]


def test_malformed_csv_names_the_line():
    text = 'a,b\n1,2\n3,"unterminated\n'
    with pytest.raises(ConnectorError, match=r"malformed CSV at line \d+"):
        parse(text, delimiter=",")
    with pytest.raises(ConnectorError, match=r"line 3 has 3 field\(s\) but the header has 2"):
        parse("a,b\n1,2\n3,4,5\n", delimiter=",")
    with pytest.raises(ConnectorError, match=r"malformed CSV at line 2: .*"):
        parse('a,b\n"x"y,2\n', delimiter=",")


def test_lenient_mode_pads_and_drops():
    out = parse("a,b\n1\n3,4,5\n", delimiter=",", strict=False)
    assert out["rows"] == [{"a": "1", "b": ""}, {"a": "3", "b": "4"}]


def test_max_rows_bounds_what_is_kept_not_what_is_read():
    big = "n\n" + "".join(f"{i}\n" for i in range(50_000))
    with pytest.raises(ConnectorError, match="more than max_rows=100 rows"):
        parse(big, max_rows=100)
    out = parse(big, max_rows=100, infer_types=True, filter="row.n % 1000 == 0")
    assert out["count"] == 50


def test_write_objects_and_arrays():
    rows = [{"id": 1, "name": "Ada", "tags": ["x"], "paid": True}, {"id": 2, "name": "Bob, Jr.", "note": None}]
    out = run_inline(Csv, {"operation": "write", "rows": rows})
    assert out["text"] == 'id,name,tags,paid,note\r\n1,Ada,"[""x""]",true,\r\n2,"Bob, Jr.",,,\r\n'
    out = run_inline(Csv, {"operation": "write", "rows": [[1, 2], [3, 4]], "columns": ["a", "b"],
                           "delimiter": ";", "line_terminator": "\n", "filter": "row.a > 1"})
    assert out == {"text": "a;b\n3;4\n", "count": 1}


def test_round_trip():
    written = run_inline(Csv, {"operation": "write", "rows": [{"a": 1, "b": "x,y"}, {"a": 2, "b": 'q"'}]})
    back = parse(written["text"], infer_types=True)
    assert back["rows"] == [{"a": 1, "b": "x,y"}, {"a": 2, "b": 'q"'}]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"operation": "parse"}, "text"),
        ({"operation": "write"}, "rows"),
        ({"text": "a", "filter": "row.a >"}, "filter"),
        ({"text": "a", "delimiter": ";;"}, "delimiter"),
        ({"text": "a", "max_rows": 0}, "max_rows"),
    ],
)
def test_config_errors_name_the_field(config, field):
    with pytest.raises(ConfigInvalid) as info:
        run_inline(Csv, config)
    assert field in info.value.messages


def test_in_the_subprocess_sandbox_with_templates_evaluated_there():
    result = run_connector("csv", {"text": ORDERS, "infer_types": True, "filter": "row.paid"})
    assert result.ok, result.error
    assert [r["customer"] for r in result.output["rows"]] == ["Ada", "Cy"]
    assert any(line.endswith("parsed 2 row(s)") for line in result.logs)
    bad = run_connector("csv", {"text": "a,b\n1,2,3\n", "delimiter": ","})
    assert not bad.ok and bad.error_kind == "connector" and not bad.retryable
    assert "line 2" in bad.error
