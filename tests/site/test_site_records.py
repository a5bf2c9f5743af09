"""Stored site checks: the JSON splice that puts the check id and timings around a stored result."""

from __future__ import annotations

import json

import orjson
import pytest

from spatial.site.records import new_check_id, with_members


@pytest.mark.parametrize("document", [
    b'{"a": 1, "b": [1, {"c": "\\u4e2d"}]}', b"{}", b' { "a" : null } ', '{"中": 2}'.encode()])
def test_with_members_equals_serialising_the_merged_object(document):
    first, last = {"check_id": new_check_id()}, {"timings_ms": {"query": 1.25, "total": 3.5}}
    merged = {**first, **json.loads(document), **last}
    spliced = with_members(document, first=first, last=last)
    assert json.loads(spliced) == merged
    assert list(json.loads(spliced)) == list(merged)


def test_with_members_of_a_compact_object_is_byte_identical_to_orjson():
    result = {"verdict": {"level": "allowed", "reasons": []}, "share": 0.25, "name": "生态保护红线"}
    first, last = {"check_id": "SC-20261123-0123456789"}, {"timings_ms": {"total": 4.2}}
    assert with_members(orjson.dumps(result), first=first, last=last) == orjson.dumps({**first, **result, **last})
    assert with_members(orjson.dumps(result)) == orjson.dumps(result)
