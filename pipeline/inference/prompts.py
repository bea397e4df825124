"""Prompts for the text-conditioned families (FLUX.2 [klein]): a template over catalogue fields, rendered per pair.

The fields are the catalogue's `category` and `title` (a column catalogues may carry; where a product has none, its
title is its category). A template naming another field is a configuration error, found when the settings load.
"""

from __future__ import annotations

import string

import pyarrow as pa

PROMPT_FIELDS = ("category", "title")
# An instruction, as klein's editing prompts are written; the reference image carries the product's look.
DEFAULT_PROMPT = ("Insert the {title} from the reference image into the masked area, matching the scene's "
                  "perspective, scale and lighting")
# Where a product has neither a title nor a category.
FALLBACK_NAME = "product"


def template_fields(template: str) -> tuple[str, ...]:
    """The fields `template` names, in order of first use. ValueError for a malformed template or unknown field."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"prompt template {template!r} is malformed: {exc}") from None
    unknown = sorted({n for n in names if n not in PROMPT_FIELDS})
    if unknown or any(n == "" for n in names):
        raise ValueError(f"prompt template {template!r} names {', '.join(unknown) or 'a positional field'}; the "
                         f"fields are {', '.join('{' + f + '}' for f in PROMPT_FIELDS)}")
    return tuple(dict.fromkeys(names))


def check_template(template: str) -> None:
    template_fields(template)


def render(template: str, category: str | None, title: str | None) -> str:
    """One pair's prompt."""
    name = category or FALLBACK_NAME
    return template.format(category=name, title=title or name)


def known_prompts(template: str, catalogue: pa.Table, limit: int) -> list[str] | None:
    """Every prompt the products of `catalogue` give, when there are at most `limit` distinct ones (else None): an
    inference actor encodes them when it starts, then keeps its text encoder off the GPU."""
    fields = template_fields(template)
    if not fields:
        return [template.format()]
    columns = {f: catalogue.column(f) if f in catalogue.column_names else pa.nulls(catalogue.num_rows, pa.string())
               for f in ("category", "title")}
    distinct = pa.table(columns).group_by(["category", "title"] if "title" in fields else ["category"]).aggregate([])
    if distinct.num_rows > limit:
        return None
    titles = distinct.column("title").to_pylist() if "title" in fields else [None] * distinct.num_rows
    prompts = {render(template, c, t) for c, t in zip(distinct.column("category").to_pylist(), titles, strict=True)}
    return sorted(prompts)



