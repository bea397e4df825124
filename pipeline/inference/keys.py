"""Output keys from ids. Ids from manifests are data: they are escaped, never used as paths."""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_VARIANT = "default"


def escape_segment(value: str) -> str:
    """Percent-encode an id so it is exactly one safe key segment.

    `quote(..., safe="")` escapes `/`, spaces, `%` and every non-ASCII byte; `.` and `..` are the only
    segments it leaves meaningful to a filesystem, so dots at the start are escaped too. The mapping is
    injective, so distinct ids never share a key.
    """
    if not value:
        raise ValueError("an id must be a non-empty string")
    escaped = quote(value, safe="-_.~")
    if escaped.startswith("."):
        escaped = "%2E" + escaped[1:]
    return escaped


def image_key(variant: str, product_id: str, scene_id: str, ext: str) -> str:
    """`images/<variant>/<product_id>/<scene_id>.<ext>` relative to the run's prefix."""
    return "/".join(
        ["images", escape_segment(variant), escape_segment(product_id), f"{escape_segment(scene_id)}.{ext}"]
    )
