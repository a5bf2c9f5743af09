"""Writing a prepared layer as a new version: binary COPY into its own partition, one transaction.

The version's table is created, filled, indexed and attached to ``feature`` in the same
transaction that makes it current. Readers keep seeing the old version until that commits; a load
that fails or is killed rolls back and leaves no table and no rows. With ``wal_level=minimal``
(the embedded cluster's setting) a COPY into a table created in the same transaction skips WAL,
and ``FREEZE`` writes its rows frozen and all-visible, so neither the index build, the first
readers nor a later anti-wraparound vacuum go back over the pages. (The price, per PostgreSQL's
docs: a transaction whose snapshot predates the commit can see the new rows once the partition
is attached. Readers select a version id, read from ``layer`` in their own snapshot, so they
never mix versions.)

The COPY stream is encoded chunk by chunk (``copy_rows``, column-wise) in a worker thread while
the server parses the chunk before. Given a ``repair``, geometry validity (``validity.is_valid``,
without the GIL) runs in the background beside the COPY and the index build instead of before
them; the few invalid geometries it finds are repaired and updated in place before the commit.
Each chunk is sent in one blocking libpq call that releases the GIL (``_BlockingWriter``):
psycopg's default writer needs the GIL again every 128 kB, and with the encoder holding it the
server sat idle half the time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg.abc import Buffer
from psycopg.copy import LibpqWriter

from layers.ingest.copy_rows import COPY_HEADER, COPY_TRAILER, copy_rows

FIRST_CHUNK_ROWS = 2_048  # small, so that the server starts parsing early
CHUNK_ROWS = 8_192
LOOKAHEAD = 2  # encoded chunks held ahead of the COPY (bounds memory on million-row layers)
SPARE_TIME_NICE = 10

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class NewVersion:
    layer_code: str
    source_name: str
    source_checksum: str
    source_crs: str
    srid: int
    valid_from: str | None
    report: dict
    coverage_wkb: bytes | None
    raster_path: str | None = None


def _chunk_bounds(total: int) -> list[tuple[int, int]]:
    bounds, start = [], 0
    size = FIRST_CHUNK_ROWS
    while start < total:
        bounds.append((start, min(start + size, total)))
        start += size
        size = CHUNK_ROWS
    return bounds


class _BlockingWriter(LibpqWriter):
    """Hands each buffer to libpq in blocking mode, in one call that runs without the GIL.

    psycopg keeps its connections non-blocking and writes COPY data 128 kB at a time, taking the
    GIL back between pieces; while an encoder thread holds the GIL each piece waits a thread
    switch interval (5 ms), and the server starves. ``PGconn.put_copy_data`` releases the GIL,
    so in blocking mode a whole chunk goes out while the encoder works.
    """

    def write(self, data: Buffer) -> None:
        pgconn = self.connection.pgconn
        pgconn.nonblocking = 0
        try:
            if pgconn.put_copy_data(data) != 1 or pgconn.flush() != 0:
                raise psycopg.OperationalError(pgconn.get_error_message() or "COPY data was not sent")
        finally:
            pgconn.nonblocking = 1


class Repair(Protocol):
    """Validity and repair of the geometries being written (``prepare.GeometryRepair`` is one)."""

    def invalid(self, geoms: np.ndarray) -> np.ndarray: ...  # positions of the invalid geometries

    def repair(self, invalid: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, list[dict]]: ...

    def record(self, repairs: list[dict]) -> None: ...

    def summary(self) -> dict: ...  # {"repaired": count, "repairs": [first examples]}


def encoded_chunks(version_id: int, fids: np.ndarray, attributes: pd.DataFrame,
                   geoms: np.ndarray) -> Iterator[tuple[int, Buffer]]:
    """(rows, COPY bytes) per chunk, in order, encoded in a worker thread ahead of the consumer."""
    def encode(start: int, stop: int) -> tuple[int, Buffer]:
        return stop - start, copy_rows(version_id, fids[start:stop], attributes.iloc[start:stop], geoms[start:stop])

    # One worker, ahead of the thread that sends.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-encode") as pool:
        pending: deque[Future] = deque()
        try:
            for start, stop in _chunk_bounds(len(fids)):
                pending.append(pool.submit(encode, start, stop))
                if len(pending) > LOOKAHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def write_version(conn: psycopg.Connection, new: NewVersion, *, fids: np.ndarray,
                  attributes: pd.DataFrame, geoms: np.ndarray, repair: Repair | None = None,
                  progress: Progress | None = None, timings: dict[str, float] | None = None) -> tuple[int, int]:
    """Store a new version of a vector layer and make it current, atomically.

    Parameters
    ----------
    conn : a psycopg connection in autocommit mode (the transaction is opened here).
    fids, attributes, geoms : the prepared features (see ``layers.ingest.prepare``), geometries in
        the storage CRS; valid, unless ``repair`` is given.
    repair : validity and repair; the check runs in the background during the COPY and the index
        build, then the invalid geometries are repaired, updated in place, and the version row's
        ``repaired_count``, ``report`` and extent follow, all before the commit.
    timings : when given, receives seconds spent in ``copy``, ``index``, ``repair`` and ``commit``.

    Returns
    -------
    (version_id, version): the new version's row id and its number within the layer.
    """
    clock = _Clock(timings)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="validity") as background:
        invalid = background.submit(_in_spare_time, repair.invalid, geoms) if repair is not None else None
        with conn.transaction(), conn.cursor() as cur:
            version_id, version = _insert_version_row(cur, new, feature_count=len(fids), geoms=geoms)
            table = f"feature_v{version_id}"
            # The CHECK lets ATTACH skip scanning the table; given now, rows are checked as they arrive
            # instead of in one more pass over the table afterwards.
            cur.execute(f"CREATE TABLE {table} (LIKE feature INCLUDING DEFAULTS,"
                        f" CONSTRAINT {table}_version CHECK (version_id = {version_id}))")
            done = 0
            copy_sql = f"COPY {table} (version_id, fid, props, geom) FROM STDIN (FORMAT binary, FREEZE)"
            with cur.copy(copy_sql, writer=_BlockingWriter(cur)) as cp:
                cp.write(COPY_HEADER)
                for rows, data in encoded_chunks(version_id, fids, attributes, geoms):
                    cp.write(data)
                    done += rows
                    if progress:
                        progress("copy", done, len(fids))
                cp.write(COPY_TRAILER)
            clock.lap("copy")
            if progress:
                progress("index", 0, 1)
            # Statistics are left to autovacuum.
            cur.execute(f"CREATE INDEX {table}_geom ON {table} USING gist (geom)")
            clock.lap("index")
            if invalid is not None:
                _repair_in_place(cur, table, new, version_id, repair, geoms, fids, invalid.result())
                clock.lap("repair")
            cur.execute(f"ALTER TABLE feature ATTACH PARTITION {table} FOR VALUES IN ({version_id})")
            _make_current(cur, new.layer_code, version_id)
        clock.lap("commit")  # with WAL skipped, the commit syncs the new table's files to disk
    return version_id, version


def _in_spare_time(work: Callable, *args):
    """Run ``work`` at a low CPU priority (Linux gives each thread its own nice value; threads it
    starts inherit it): the COPY's encoder and the server come first, validity takes the idle time."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: run at the usual priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPARE_TIME_NICE)
    return work(*args)


def _repair_in_place(cur: psycopg.Cursor, table: str, new: NewVersion, version_id: int, repair: Repair,
                     geoms: np.ndarray, fids: np.ndarray, invalid: np.ndarray) -> None:
    """Replace the invalid geometries already copied by their repairs; record them on the version."""
    if len(invalid):
        repaired, repairs = repair.repair(geoms[invalid], fids[invalid])
        repair.record(repairs)
        cur.execute("CREATE TEMP TABLE repaired_geometry (fid bigint, wkb bytea) ON COMMIT DROP")
        with cur.copy("COPY repaired_geometry (fid, wkb) FROM STDIN") as cp:
            for fid, wkb in zip(fids[invalid].tolist(), shapely.to_wkb(repaired, output_dimension=2), strict=True):
                cp.write_row((fid, wkb))
        cur.execute(f"UPDATE {table} t SET geom = ST_GeomFromWKB(r.wkb, %s) FROM repaired_geometry r"
                    " WHERE t.fid = r.fid", (new.srid,))
        fixed = geoms.copy()
        fixed[invalid] = repaired
        extent = _extent_wkb(fixed)
        cur.execute("UPDATE layer_version SET extent = ST_SetSRID(ST_GeomFromWKB(%s), %s) WHERE id = %s",
                    (extent, new.srid, version_id))
        if new.coverage_wkb is None:  # the coverage defaults to the extent
            cur.execute("UPDATE layer_version SET coverage = ST_Multi(extent) WHERE id = %s", (version_id,))
    summary = repair.summary()
    cur.execute("UPDATE layer_version SET repaired_count = %s, report = report || %s WHERE id = %s",
                (summary["repaired"], psycopg.types.json.Jsonb(summary), version_id))


def _extent_wkb(geoms: np.ndarray) -> bytes:
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    return shapely.to_wkb(shapely.box(xmin, ymin, xmax, ymax))


class _Clock:
    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def write_raster_version(conn: psycopg.Connection, new: NewVersion, *, extent_wkb: bytes) -> tuple[int, int]:
    """Register a raster file as a new, current version of a raster layer."""
    with conn.transaction(), conn.cursor() as cur:
        version_id, version = _insert_version_row(cur, new, feature_count=0, geoms=None,
                                                  extent_wkb=extent_wkb)
        _make_current(cur, new.layer_code, version_id)
    return version_id, version


def _insert_version_row(cur: psycopg.Cursor, new: NewVersion, *, feature_count: int,
                        geoms: np.ndarray | None, extent_wkb: bytes | None = None) -> tuple[int, int]:
    # One load per layer at a time; loads of different layers run side by side.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('layer:' || %s))", (new.layer_code,))
    if geoms is not None and len(geoms):
        extent_wkb = _extent_wkb(geoms)
    cur.execute(
        """
        INSERT INTO layer_version (layer_code, version, source_name, source_checksum, source_crs,
                                   feature_count, repaired_count, extent, coverage, valid_from,
                                   raster_path, report)
        SELECT %(code)s, coalesce(max(version), 0) + 1, %(source)s, %(checksum)s, %(crs)s,
               %(count)s, %(repaired)s,
               ST_SetSRID(ST_GeomFromWKB(%(extent)s), %(srid)s),
               ST_Multi(ST_SetSRID(ST_GeomFromWKB(%(coverage)s), %(srid)s)),
               coalesce(%(valid_from)s::timestamptz, now()), %(raster)s, %(report)s
        FROM layer_version WHERE layer_code = %(code)s
        RETURNING id, version
        """,
        {
            "code": new.layer_code, "source": new.source_name, "checksum": new.source_checksum,
            "crs": new.source_crs, "count": feature_count,
            "repaired": int(new.report.get("repaired", 0)), "extent": extent_wkb,
            "coverage": new.coverage_wkb or extent_wkb, "srid": new.srid,
            "valid_from": new.valid_from, "raster": new.raster_path,
            "report": psycopg.types.json.Jsonb(new.report),
        },
    )
    return cur.fetchone()


def _make_current(cur: psycopg.Cursor, layer_code: str, version_id: int) -> None:
    cur.execute(
        """
        UPDATE layer_version SET superseded_at = now()
        WHERE id = (SELECT current_version_id FROM layer WHERE code = %s)
        """,
        (layer_code,),
    )
    cur.execute("UPDATE layer SET current_version_id = %s WHERE code = %s", (version_id, layer_code))
