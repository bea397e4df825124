import pytest

from pipeline.inference.keys import escape_segment, image_key


@pytest.mark.parametrize(
    "raw", ["a/b", "..", ".", "../../etc/passwd", "with space", "naïve-ß", "%2F", "a\\b", ".hidden"]
)
def test_escaped_ids_are_one_safe_segment(raw):
    seg = escape_segment(raw)
    assert "/" not in seg and "\\" not in seg and " " not in seg
    assert seg not in (".", "..") and not seg.startswith(".")
    assert seg.isascii()


def test_escaping_is_injective():
    ids = ["a/b", "a%2Fb", "a b", "a+b", "..", "%2E.", ".x", "%2Ex", "x"]
    assert len({escape_segment(i) for i in ids}) == len(ids)


def test_image_key_layout():
    assert image_key("default", "p/1", "s 2", "png") == "images/default/p%2F1/s%202.png"


def test_empty_id_rejected():
    with pytest.raises(ValueError):
        escape_segment("")
