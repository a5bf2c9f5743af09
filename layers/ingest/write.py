"""Writing a prepared layer as a new version: binary COPY into its own partition, atomically.

The version's table is created, filled, indexed and attached to ``feature`` in the transaction
that makes it current. Readers keep seeing the old version until that commits; a load that fails
or is killed rolls back. With ``wal_level=minimal`` (the embedded cluster's setting) a COPY into a
table created in the same transaction skips WAL, and ``FREEZE`` writes its rows frozen and
all-visible, so neither the index build, the first readers nor a later anti-wraparound vacuum go
back over the pages. (The price, per PostgreSQL's docs: a transaction whose snapshot predates the
commit can see the new rows once the partition is attached. Readers select a version id, read
from ``layer`` in their own snapshot, so they never mix versions.)

A big layer is written as ``COPY_STREAMS`` parts by fid range, each COPYed and indexed by its own
server process at once: one process parses ~0.24 CPU-s and indexes ~0.2 CPU-s per 100k
40-vertex polygons, one step after the other; with two, 100k rows took 0.65 s instead of 0.72 s
on our 2-core VM (see ``ROWS_PER_STREAM``). The version's
table is then partitioned by fid range over its parts. A helper stream's part must be committed
before the load's own transaction can attach it, so every stream waits at a barrier once its part
is filled and indexed, and all commit together; an error anywhere breaks the barrier and every
part rolls back. Only a load killed in the moments between the helpers' commit and its own leaves
a part behind: unattached, never seen by readers, and dropped by the next load
(``_drop_abandoned_parts``).

Each stream is encoded chunk by chunk (``copy_rows``, column-wise) in a worker thread while the
server parses the chunk before. Given a ``repair``, geometry validity (``validity.valid_and_bounds``,
without the GIL) runs in the background beside the COPY and the index build instead of before
them, and so does the extent; the few invalid geometries it finds are repaired and updated in
place before the commit.
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
import pyarrow as pa
import shapely
from psycopg.abc import Buffer
from psycopg.copy import LibpqWriter
from sqlalchemy.engine import Engine

from layers import db
from layers.ingest import validity
from layers.ingest import wkb as wkb_
from layers.ingest.copy_rows import COPY_HEADER, COPY_TRAILER, copy_rows

FIRST_CHUNK_ROWS = 2_048  # small, so that the server starts parsing early
CHUNK_ROWS = 8_192
LOOKAHEAD = 2  # encoded chunks held ahead of the COPY (bounds memory on million-row layers)
SPARE_TIME_NICE = 10
COPY_STREAMS = 2  # a big layer is written as this many parts, each by its own server process
# Rows per stream: at 20k and 50k rows one stream and two take the same time within noise
# (0.22 vs 0.21 s, 0.39 vs 0.40 s); at 100k two take 0.65 s, one 0.72 s (medians of 5, 2-core VM).
ROWS_PER_STREAM = 25_000
PART_LOCK_SPACE = 0x6C6F6164  # advisory lock (space, version id): held while a version is being written

Progress = Callable[[str, int, int], None]
Rows = tuple[np.ndarray, pd.DataFrame, pa.LargeBinaryArray]  # fids, attributes, WKB
Bounds = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax


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
    """Repair of the invalid geometries being written (``prepare.GeometryRepair`` is one)."""

    def repair(self, invalid: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, list[dict]]: ...

    def record(self, repairs: list[dict]) -> None: ...

    def summary(self) -> dict: ...  # {"repaired": count, "repairs": [first examples]}


def encoded_chunks(version_id: int, fids: np.ndarray, attributes: pd.DataFrame,
                   wkb: pa.LargeBinaryArray) -> Iterator[tuple[int, Buffer]]:
    """(rows, COPY bytes) per chunk, in order, encoded in a worker thread ahead of the consumer."""
    def encode(start: int, stop: int) -> tuple[int, Buffer]:
        return stop - start, copy_rows(version_id, fids[start:stop], attributes.iloc[start:stop],
                                       wkb.slice(start, stop - start))

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


def write_version(engine: Engine, new: NewVersion, *, fids: np.ndarray, attributes: pd.DataFrame,
                  wkb: pa.LargeBinaryArray, repair: Repair | None = None, progress: Progress | None = None,
                  timings: dict[str, float] | None = None, streams: int | None = None) -> tuple[int, int]:
    """Store a new version of a vector layer and make it current, atomically.

    Parameters
    ----------
    engine : the database; the write takes one pooled connection per COPY stream.
    fids, attributes, wkb : the prepared features (see ``layers.ingest.prepare``), geometries as
        2D WKB in the storage CRS (``layers.ingest.wkb``); valid, unless ``repair`` is given.
    repair : validity and repair; the check runs in the background during the COPY and the index
        build, then the invalid geometries are repaired, updated in place, and the version row's
        ``repaired_count``, ``report`` and extent follow, all before the commit.
    streams : parallel COPY streams; by default ``copy_streams(len(fids))``.
    timings : when given, receives seconds spent in ``copy``, ``index``, ``parts``, ``repair`` and
        ``commit``.

    Returns
    -------
    (version_id, version): the new version's row id and its number within the layer.
    """
    clock = _Clock(timings)
    shared = _StreamsProgress(len(fids), progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="validity") as background, \
            db.autocommit_connection(engine) as conn:
        checks = background.submit(_in_spare_time, _geometry_checks, wkb, repair)
        parts: list[Part] = []
        helpers: list[Future] = []
        try:
            with conn.transaction(), conn.cursor() as cur:
                version_id, version = _insert_version_row(cur, new, feature_count=len(fids))
                # Held until the commit: while it is, this load's parts are not abandoned.
                cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (PART_LOCK_SPACE, version_id))
                _drop_abandoned_parts(cur)
                parts = split_into_parts(version_id, fids, streams or copy_streams(len(fids)))
                invalid, extent = _fill_parts(engine, cur, version_id, parts, (fids, attributes, wkb),
                                              shared, clock, helpers, checks)
                clock.lap("parts")
                table = _version_table(cur, version_id, parts)
                if invalid is not None:
                    extent = _repair_in_place(cur, table, new, version_id, repair, wkb, fids, invalid, extent)
                    clock.lap("repair")
                _set_extent(cur, new, version_id, extent)
                cur.execute(f"ALTER TABLE feature ATTACH PARTITION {table} FOR VALUES IN ({version_id})")
                _make_current(cur, new.layer_code, version_id)
        except BaseException:
            committed = [part.table for part, helper in zip(parts[1:], helpers, strict=False)
                         if helper.exception() is None]
            _drop_tables(conn, committed)
            raise
        clock.lap("commit")  # with WAL skipped, the commit syncs the new table's files to disk
    return version_id, version


def _fill_parts(engine: Engine, cur: psycopg.Cursor, version_id: int, parts: list[Part],
                features: Rows, progress: _StreamsProgress, clock: _Clock,
                helpers: list[Future], checks: Future) -> tuple[np.ndarray | None, Bounds]:
    """Fill and index every part, the first on ``cur`` and the others by helper streams (added to
    ``helpers`` as they start), and commit the helpers' parts together; ``checks``' result.

    Every stream waits at a barrier once its part is indexed: the helpers' parts must be committed
    for ``cur``'s transaction to attach them. Validity is awaited before the barrier, since the
    moments between the helpers' commit and this transaction's are the only ones a kill leaves
    parts in. Any stream's error breaks the barrier, and every helper's part rolls back.
    """
    barrier = threading.Barrier(len(parts))
    try:
        helpers += [_start_helper(engine, version_id, part, features, progress, barrier) for part in parts[1:]]
        _fill_part(cur, version_id, parts[0], features, progress, clock)
        checked = checks.result()
        barrier.wait()
    except BaseException as error:
        barrier.abort()
        failed = _helper_error(helpers)
        if isinstance(error, threading.BrokenBarrierError) and failed is not None:
            raise failed from None  # a helper's error is this write's error
        raise
    failed = _helper_error(helpers)  # each helper has committed, or failed to
    if failed is not None:
        raise failed
    return checked


def copy_streams(rows: int) -> int:
    """How many COPY streams a layer of ``rows`` features is written with."""
    return max(1, min(COPY_STREAMS, rows // ROWS_PER_STREAM))


@dataclass(frozen=True)
class Part:
    """One table of a version: the features whose fid is in ``[low, high)`` (None: unbounded)."""

    table: str
    positions: slice | np.ndarray  # where its features are in the prepared arrays
    low: int | None
    high: int | None

    def check(self, version_id: int) -> str:
        """The CHECK that proves the part belongs to its version and its fid range, so that
        attaching it needs no scan."""
        terms = [f"version_id = {version_id}"]
        terms += [f"fid >= {self.low}"] if self.low is not None else []
        terms += [f"fid < {self.high}"] if self.high is not None else []
        return " AND ".join(terms)


def split_into_parts(version_id: int, fids: np.ndarray, count: int) -> list[Part]:
    """``count`` parts of equal size by fid range; one part is the version's table itself."""
    if count == 1:
        return [Part(f"feature_v{version_id}", slice(None), None, None)]
    increasing = bool(np.all(fids[1:] > fids[:-1]))
    order = None if increasing else np.argsort(fids, kind="stable")
    ordered = fids if increasing else fids[order]
    cuts = [len(fids) * i // count for i in range(count + 1)]
    parts = []
    for i in range(count):
        start, stop = cuts[i], cuts[i + 1]
        parts.append(Part(f"feature_v{version_id}_p{i}",
                          slice(start, stop) if increasing else order[start:stop],
                          None if i == 0 else int(ordered[start]),
                          None if i == count - 1 else int(ordered[stop])))
    return parts


def _fill_part(cur: psycopg.Cursor, version_id: int, part: Part,
               features: Rows, progress: _StreamsProgress,
               clock: _Clock | None = None) -> None:
    """Create the part's table, COPY its features in and index it, in the cursor's transaction.

    Created in the same transaction as the COPY, the table skips WAL (``wal_level=minimal``) and
    takes ``FREEZE``; its CHECK, given now, is checked row by row as rows arrive instead of in one
    more pass over the table afterwards.
    """
    fids, attributes, wkb = (
        features[0][part.positions], features[1].iloc[part.positions], wkb_.take(features[2], part.positions))
    cur.execute(f"CREATE TABLE {part.table} (LIKE feature INCLUDING DEFAULTS,"
                f" CONSTRAINT {part.table}_rows CHECK ({part.check(version_id)}))")
    copy_sql = f"COPY {part.table} (version_id, fid, props, geom) FROM STDIN (FORMAT binary, FREEZE)"
    with cur.copy(copy_sql, writer=_BlockingWriter(cur)) as cp:
        cp.write(COPY_HEADER)
        for count, data in encoded_chunks(version_id, fids, attributes, wkb):
            cp.write(data)
            progress.copied(count)
        cp.write(COPY_TRAILER)
    if clock:
        clock.lap("copy")
    progress.stage("index")
    # Statistics are left to autovacuum.
    cur.execute(f"CREATE INDEX {part.table}_geom ON {part.table} USING gist (geom)")
    if clock:
        clock.lap("index")


def _start_helper(engine: Engine, version_id: int, part: Part,
                  features: Rows, progress: _StreamsProgress,
                  barrier: threading.Barrier) -> Future:
    """Fill one part on a connection of its own, in a thread; commit it once every part is ready."""
    def fill_and_commit() -> None:
        try:
            with db.autocommit_connection(engine) as conn, conn.transaction(), conn.cursor() as cur:
                _fill_part(cur, version_id, part, features, progress)
                barrier.wait()  # broken when another stream failed: this part rolls back
        except BaseException:
            barrier.abort()
            raise

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"copy-{part.table}")
    future = pool.submit(fill_and_commit)
    pool.shutdown(wait=False)
    return future


def _helper_error(helpers: list[Future]) -> BaseException | None:
    """Wait for every helper; the first error that is not only the broken barrier."""
    errors = [helper.exception() for helper in helpers]
    return next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)), None)


def _version_table(cur: psycopg.Cursor, version_id: int, parts: list[Part]) -> str:
    """The version's table: its only part, or a table partitioned by fid range holding the parts."""
    table = f"feature_v{version_id}"
    if len(parts) > 1:
        cur.execute(f"CREATE TABLE {table} (LIKE feature INCLUDING DEFAULTS) PARTITION BY RANGE (fid)")
        for part in parts:
            low = "MINVALUE" if part.low is None else part.low
            high = "MAXVALUE" if part.high is None else part.high
            cur.execute(f"ALTER TABLE {table} ATTACH PARTITION {part.table} FOR VALUES FROM ({low}) TO ({high})")
    return table


def _drop_abandoned_parts(cur: psycopg.Cursor) -> None:
    """Drop the parts a killed load committed but never attached.

    A helper stream commits its part just before the load's own transaction attaches it; a load
    killed in between leaves the part behind, unattached and unseen by readers. Its version's
    lock is free once the load is gone; the lock comes first and attachment is checked after it,
    so a load that commits meanwhile is seen attached.
    """
    unattached = ("SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ %s"
                  " AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)")
    for (name,) in cur.execute(unattached, (r"^feature_v[0-9]+_p[0-9]+$",)).fetchall():
        version_id = int(name.split("_")[1][1:])
        if not cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", (PART_LOCK_SPACE, version_id)).fetchone()[0]:
            continue  # its load is running
        if cur.execute(unattached.replace("~ %s", "= %s"), (name,)).fetchone():
            cur.execute(f"DROP TABLE {name}")


def _drop_tables(conn: psycopg.Connection, tables: list[str]) -> None:
    """Drop the parts helpers committed for a write that then failed (best effort: a part left
    behind is dropped by the next load)."""
    with contextlib.suppress(psycopg.Error):
        for table in tables:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


class _StreamsProgress:
    """``progress`` fed from every stream's thread: rows copied so far, then each later stage once."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress = total, progress
        self.done = 0
        self.stages: set[str] = set()
        self.lock = threading.Lock()

    def copied(self, rows: int) -> None:
        if self.progress is not None:
            with self.lock:
                self.done += rows
                self.progress("copy", self.done, self.total)

    def stage(self, name: str) -> None:
        if self.progress is not None:
            with self.lock:
                if name not in self.stages:
                    self.stages.add(name)
                    self.progress(name, 0, 1)


def _in_spare_time(work: Callable, *args):
    """Run ``work`` at a low CPU priority (Linux gives each thread its own nice value; threads it
    starts inherit it): the COPY's encoder and the server come first, validity takes the idle time."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux: run at the usual priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPARE_TIME_NICE)
    return work(*args)


def _repair_in_place(cur: psycopg.Cursor, table: str, new: NewVersion, version_id: int, repair: Repair,
                     wkb: pa.LargeBinaryArray, fids: np.ndarray, invalid: np.ndarray, extent: Bounds) -> Bounds:
    """Replace the invalid geometries already copied by their repairs and record them on the
    version; the extent with the repairs."""
    if len(invalid):
        repaired, repairs = repair.repair(wkb_.objects(wkb_.take(wkb, invalid)), fids[invalid])
        repair.record(repairs)
        cur.execute("CREATE TEMP TABLE repaired_geometry (fid bigint, wkb bytea) ON COMMIT DROP")
        with cur.copy("COPY repaired_geometry (fid, wkb) FROM STDIN") as cp:
            for fid, fixed in zip(fids[invalid].tolist(), shapely.to_wkb(repaired, output_dimension=2), strict=True):
                cp.write_row((fid, fixed))
        cur.execute(f"UPDATE {table} t SET geom = ST_GeomFromWKB(r.wkb, %s) FROM repaired_geometry r"
                    " WHERE t.fid = r.fid", (new.srid,))
        extent = wkb_.total_bounds(wkb_.replace(wkb, invalid, wkb_.wkb_array(repaired)))
    summary = repair.summary()
    cur.execute("UPDATE layer_version SET repaired_count = %s, report = report || %s WHERE id = %s",
                (summary["repaired"], psycopg.types.json.Jsonb(summary), version_id))
    return extent


def _geometry_checks(wkb: pa.LargeBinaryArray, repair: Repair | None) -> tuple[np.ndarray | None, Bounds]:
    """The positions of the invalid geometries (None without a ``repair``) and the extent."""
    if repair is None:
        return None, wkb_.total_bounds(wkb)
    valid, extent = validity.valid_and_bounds(wkb)
    return np.flatnonzero(~valid), extent


def _set_extent(cur: psycopg.Cursor, new: NewVersion, version_id: int, extent: Bounds) -> None:
    cur.execute("UPDATE layer_version SET extent = ST_MakeEnvelope(%s, %s, %s, %s, %s) WHERE id = %s",
                (*extent, new.srid, version_id))
    if new.coverage_wkb is None:  # the coverage defaults to the extent
        cur.execute("UPDATE layer_version SET coverage = ST_Multi(extent) WHERE id = %s", (version_id,))


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
        version_id, version = _insert_version_row(cur, new, feature_count=0,
                                                  extent_wkb=extent_wkb)
        _make_current(cur, new.layer_code, version_id)
    return version_id, version


def _insert_version_row(cur: psycopg.Cursor, new: NewVersion, *, feature_count: int,
                        extent_wkb: bytes | None = None) -> tuple[int, int]:
    # One load per layer at a time; loads of different layers run side by side.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('layer:' || %s))", (new.layer_code,))
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
