"""Stored site checks: written once, read back by id to be cited (input, versions, result)."""

from __future__ import annotations

import datetime as dt
import secrets

import orjson
import shapely
import sqlalchemy as sa

from layers.errors import NotFound
from spatial.site.request import SiteRequest


def new_check_id(now: dt.datetime | None = None) -> str:
    """A citable, unguessable id such as ``SC-20261122-9F2C4A7B1E`` (date + 40 random bits)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"SC-{now.year:04d}{now.month:02d}{now.day:02d}-{secrets.token_hex(5).upper()}"


def store_check(conn: sa.Connection, *, check_id: str, request: SiteRequest, result_json: bytes, verdict: str,
                complete: bool, versions: dict, checked_at: dt.datetime) -> None:
    """Insert one check (the caller commits). ``result_json`` is the serialised result, stored as is
    (a ``json`` column: the server checks its syntax and keeps the text)."""
    conn.exec_driver_sql(
        f"""
        INSERT INTO site_check (id, checked_at, as_of, buffer_m, input_crs, request, geom, verdict, complete,
                                versions, result)
        VALUES (%(id)s, %(at)s, %(as_of)s, %(buffer)s, %(crs)s, %(request)s::jsonb,
                ST_Multi(ST_GeomFromWKB(%(geom)s, {int(request.srid)})), %(verdict)s, %(complete)s,
                %(versions)s::jsonb, %(result)s::json)
        """,
        {"id": check_id, "at": checked_at, "as_of": request.as_of, "buffer": request.buffer_m, "crs": request.crs,
         "request": orjson.dumps(request.request, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
         "geom": shapely.to_wkb(request.geometry),
         "verdict": verdict, "complete": complete, "versions": orjson.dumps(versions).decode(),
         "result": result_json.decode()},
    )


def read_check(conn: sa.Connection, check_id: str) -> dict:
    """A stored check: ``{"check_id", "checked_at", "request", "site_wkb", "result"}``.

    Raises
    ------
    NotFound
        When no check has that id.
    """
    row = conn.exec_driver_sql(
        "SELECT id, checked_at, request, ST_AsBinary(geom), result FROM site_check WHERE id = %(id)s",
        {"id": check_id}).first()
    if row is None:
        raise NotFound(f"no site check {check_id!r}")
    return {"check_id": row[0], "checked_at": row[1].isoformat(), "request": row[2],
            "site": shapely.from_wkb(row[3]), "result": row[4]}


def read_check_json(conn: sa.Connection, check_id: str) -> bytes:
    """A stored check as JSON bytes, ``check_id`` first, without decoding the stored result."""
    row = conn.exec_driver_sql("SELECT result::text FROM site_check WHERE id = %(id)s", {"id": check_id}).first()
    if row is None:
        raise NotFound(f"no site check {check_id!r}")
    return with_members(row[0].encode(), first={"check_id": check_id})


def with_members(document: bytes, *, first: dict | None = None, last: dict | None = None) -> bytes:
    """A serialised JSON object with members added before and after its own, without decoding it.

    Examples
    --------
    >>> with_members(b'{"a": 1}', first={"id": "x"}, last={"t": 2})
    b'{"id":"x","a": 1,"t":2}'
    >>> with_members(b"{}", first={"id": "x"})
    b'{"id":"x"}'
    """
    own = document.strip()[1:-1].strip()
    parts = [orjson.dumps(first)[1:-1] if first else b"", own, orjson.dumps(last)[1:-1] if last else b""]
    return b"{" + b",".join(part for part in parts if part) + b"}"
