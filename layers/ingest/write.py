"""Writing a prepared layer as a new version: binary COPY into its own partition, one transaction.

The version's table is created, filled, indexed and attached to ``feature`` in the same
transaction that makes it current. Readers keep seeing the old version until that commits; a load
that fails or is killed rolls back and leaves no table and no rows. With ``wal_level=minimal``
(the embedded cluster's setting) a COPY into a table created in the same transaction skips WAL.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import shapely

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
CHUNK_ROWS = 20_000
_ROW_HEAD = struct.Struct(">hiiiqi")  # 4 fields; int4 version_id; int8 fid; jsonb length
_LEN = struct.Struct(">i")

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


def props_json(attributes: pd.DataFrame) -> list[bytes]:
    """One JSON object per row, UTF-8, full double precision."""
    if attributes.shape[1] == 0:
        return [b"{}"] * len(attributes)
    text = attributes.to_json(orient="records", lines=True, force_ascii=False,
                              date_format="iso", double_precision=15)
    return [line.encode("utf-8") for line in text.rstrip("\n").split("\n")]


def encode_rows(version_id: int, fids: np.ndarray, props: list[bytes], wkb: np.ndarray, srid: int) -> bytes:
    """The binary COPY rows of one chunk (no header or trailer).

    ``wkb`` is little-endian 2D ISO WKB; each geometry is turned into EWKB with the SRID on the
    way by setting the SRID flag in the type word and inserting the SRID after it (cheaper than
    cloning every geometry to set its SRID in GEOS).
    """
    head = _ROW_HEAD.pack
    length = _LEN.pack
    srid_part = b"\x20" + struct.pack("<i", srid)  # high byte of the LE type word, then SRID
    parts: list[bytes] = []
    append = parts.append
    for fid, prop, geom in zip(fids.tolist(), props, wkb, strict=True):
        append(head(4, 4, version_id, 8, fid, len(prop) + 1))
        append(b"\x01")  # jsonb binary format version
        append(prop)
        append(length(len(geom) + 4))
        append(geom[:4])
        append(srid_part)
        append(geom[5:])
    return b"".join(parts)


def _chunks(version_id: int, fids: np.ndarray, attributes: pd.DataFrame, geoms: np.ndarray,
            srid: int) -> Iterator[tuple[int, bytes]]:
    def encode(start: int) -> tuple[int, bytes]:
        stop = min(start + CHUNK_ROWS, len(fids))
        wkb = shapely.to_wkb(geoms[start:stop], byte_order=1, output_dimension=2)
        props = props_json(attributes.iloc[start:stop])
        return stop - start, encode_rows(version_id, fids[start:stop], props, wkb, srid)

    # Encoding (shapely and struct work) overlaps with the server parsing the previous chunk.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in range(0, len(fids), CHUNK_ROWS):
            future = pool.submit(encode, start)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def write_version(conn: psycopg.Connection, new: NewVersion, *, fids: np.ndarray,
                  attributes: pd.DataFrame, geoms: np.ndarray,
                  progress: Progress | None = None) -> tuple[int, int]:
    """Store a new version of a vector layer and make it current, atomically.

    Returns
    -------
    (version_id, version): the new version's row id and its number within the layer.
    """
    with conn.transaction(), conn.cursor() as cur:
        version_id, version = _insert_version_row(cur, new, feature_count=len(fids), geoms=geoms)
        table = f"feature_v{version_id}"
        cur.execute(f"CREATE TABLE {table} (LIKE feature INCLUDING DEFAULTS)")
        done = 0
        with cur.copy(f"COPY {table} (version_id, fid, props, geom) FROM STDIN (FORMAT binary)") as cp:
            cp.write(COPY_HEADER)
            for rows, data in _chunks(version_id, fids, attributes, geoms, new.srid):
                cp.write(data)
                done += rows
                if progress:
                    progress("copy", done, len(fids))
            cp.write(COPY_TRAILER)
        if progress:
            progress("index", 0, 1)
        # The CHECK lets ATTACH skip scanning the table; statistics are left to autovacuum.
        cur.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_version CHECK (version_id = {version_id})")
        cur.execute(f"CREATE INDEX {table}_geom ON {table} USING gist (geom)")
        cur.execute(f"ALTER TABLE feature ATTACH PARTITION {table} FOR VALUES IN ({version_id})")
        _make_current(cur, new.layer_code, version_id)
    return version_id, version


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
        xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
        extent_wkb = shapely.to_wkb(shapely.box(xmin, ymin, xmax, ymax))
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
