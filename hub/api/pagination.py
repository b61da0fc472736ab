"""Page-number pagination with an envelope: ``{items, page, page_size, total}``."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class PageArgs(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    page_size = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def page_of(query, args: dict, serialize) -> dict:
    total = query.count()
    rows = query.paginate(args["page"], args["page_size"])
    return {"items": [serialize(r) for r in rows], "page": args["page"], "page_size": args["page_size"],
            "total": total}


def envelope(item_schema) -> type[Schema]:
    return type(
        f"{item_schema.__name__.removesuffix('Schema')}PageSchema",
        (Schema,),
        {"items": fields.List(fields.Nested(item_schema)), "page": fields.Integer(),
         "page_size": fields.Integer(), "total": fields.Integer()},
    )
