"""Big features, kept subdivided for site checks (a derived cache in table ``site_piece``).

A real ecological red line can have 50,000 vertices. Testing a 1 ha site against it in the
``feature`` table means de-TOASTing and converting the whole polygon on every check, which costs
milliseconds; its pieces of at most ``MAX_VERTICES`` vertices cost microseconds. So features whose
stored geometry exceeds ``BIG_BYTES`` are cut once per version (``ST_Subdivide``) on the first
check that reads the version, and checks read small features from ``feature`` and big ones from
``site_piece``. ``pg_column_size`` decides which is which without de-TOASTing anything, and the
same test on both sides splits every version exactly in two.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from layers.store import VersionInfo

BIG_BYTES = 4096
"""Stored size (bytes) above which a feature is read from its pieces (about 250 vertices)."""

MAX_VERTICES = 256

SMALL = f"pg_column_size(f.geom) <= {BIG_BYTES}"
"""SQL condition (on ``feature f``) selecting the features read directly."""

# One statement, so it is atomic even on an autocommit connection: the marker row claims the
# version (a concurrent builder waits on it, then inserts nothing) and the pieces follow.
_BUILD = f"""
    WITH claim AS (
        INSERT INTO site_piece_version (version_id) VALUES (%(v)s) ON CONFLICT DO NOTHING RETURNING version_id
    )
    INSERT INTO site_piece (version_id, fid, props, geom)
    SELECT f.version_id, f.fid, f.props, ST_Subdivide(f.geom, {MAX_VERTICES})
    FROM feature f
    WHERE f.version_id = %(v)s AND pg_column_size(f.geom) > {BIG_BYTES} AND EXISTS (SELECT 1 FROM claim)
"""

_built: set[tuple] = set()
_lock = threading.Lock()


def ensure_pieces(conn: sa.Connection, versions: list[VersionInfo]) -> int:
    """Make sure the big features of ``versions`` are subdivided; return how many versions were cut.

    The pieces are written and committed on a connection of their own, so they exist for every
    later check whatever becomes of ``conn``'s transaction. The versions must be committed.
    """
    url = conn.engine.url.render_as_string(hide_password=True)
    wanted = {v.id: (url, v.id, v.loaded_at) for v in versions if not v.raster_path}
    missing = [vid for vid, key in wanted.items() if key not in _built]
    if not missing:
        return 0
    done = {r[0] for r in conn.exec_driver_sql(
        "SELECT version_id FROM site_piece_version WHERE version_id = ANY(%(ids)s)", {"ids": missing})}
    todo = [vid for vid in missing if vid not in done]
    if todo:
        with conn.engine.begin() as writer:
            for vid in todo:
                writer.exec_driver_sql(_BUILD, {"v": vid})
    with _lock:
        if len(_built) > 50_000:
            _built.clear()
        _built.update(wanted[vid] for vid in missing)
    return len(todo)
