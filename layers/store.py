"""Reading the layer store: catalogue sync, layer listings, versions as of a date.

A version's features, as a GeoDataFrame, are read by ``layers.frames``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from layers.catalogue import Catalogue, load_catalogue
from layers.errors import InvalidInput, NotFound


def sync_catalogue(conn: sa.Connection, catalogue: Catalogue | None = None) -> int:
    """Mirror the catalogue's minor classes into the ``layer`` table; return how many exist."""
    catalogue = catalogue or load_catalogue()
    rows = [
        {"code": m.code, "name_zh": m.name_zh, "name_en": m.name_en, "geometry_type": m.geometry_type}
        for m in catalogue.minors.values()
    ]
    conn.execute(
        sa.text(
            """
            INSERT INTO layer (code, name_zh, name_en, geometry_type)
            VALUES (:code, :name_zh, :name_en, :geometry_type)
            ON CONFLICT (code) DO UPDATE SET name_zh = excluded.name_zh, name_en = excluded.name_en,
                geometry_type = excluded.geometry_type
            """
        ),
        rows,
    )
    return len(rows)


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of a layer."""

    id: int
    layer_code: str
    version: int
    feature_count: int
    source_name: str
    source_checksum: str
    loaded_at: dt.datetime
    valid_from: dt.datetime
    superseded_at: dt.datetime | None
    extent: tuple[float, float, float, float] | None
    raster_path: str | None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "layer": self.layer_code,
            "version": self.version,
            "feature_count": self.feature_count,
            "source": self.source_name,
            "checksum": self.source_checksum,
            "loaded_at": self.loaded_at.isoformat(),
            "valid_from": self.valid_from.isoformat(),
            "superseded_at": self.superseded_at.isoformat() if self.superseded_at else None,
            "extent": list(self.extent) if self.extent else None,
            "raster_path": self.raster_path,
        }


_VERSION_COLUMNS = """
    v.id, v.layer_code, v.version, v.feature_count, v.source_name, v.source_checksum,
    v.loaded_at, v.valid_from, v.superseded_at,
    ST_XMin(v.extent), ST_YMin(v.extent), ST_XMax(v.extent), ST_YMax(v.extent), v.raster_path
"""


def _version(row) -> VersionInfo:
    extent = tuple(row[9:13]) if row[9] is not None else None
    return VersionInfo(*row[:9], extent, row[13])


def current_versions(conn: sa.Connection, code: str | None = None) -> dict[str, VersionInfo]:
    """The current version of every layer that has one (or only of layer ``code``), by layer code."""
    rows = conn.execute(sa.text(
        f"SELECT {_VERSION_COLUMNS} FROM layer l JOIN layer_version v ON v.id = l.current_version_id"
        " WHERE CAST(:code AS text) IS NULL OR l.code = :code"
    ), {"code": code})
    return {row[1]: _version(row) for row in rows}


def versions_as_of(conn: sa.Connection, when: dt.datetime | dt.date | None,
                   code: str | None = None) -> dict[str, VersionInfo]:
    """The version of every layer (or only of layer ``code``) in force at a moment (None: the
    current versions).

    A version is in force from its ``valid_from``; the latest one valid by then wins.
    """
    if when is None:
        return current_versions(conn, code)
    if isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        # A date means the end of that day.
        when = dt.datetime.combine(when, dt.time.max, tzinfo=dt.UTC)
    rows = conn.execute(sa.text(
        f"""
        SELECT DISTINCT ON (v.layer_code) {_VERSION_COLUMNS}
        FROM layer_version v
        WHERE v.valid_from <= :when AND (CAST(:code AS text) IS NULL OR v.layer_code = :code)
        ORDER BY v.layer_code, v.valid_from DESC, v.id DESC
        """
    ), {"when": when, "code": code})
    return {row[1]: _version(row) for row in rows}


def layer_versions(conn: sa.Connection, code: str) -> list[VersionInfo]:
    rows = conn.execute(sa.text(
        f"SELECT {_VERSION_COLUMNS} FROM layer_version v WHERE v.layer_code = :code ORDER BY v.version"
    ), {"code": code})
    return [_version(row) for row in rows]


def chosen_version(conn: sa.Connection, code: str, *, number: int | None = None,
                   as_of: dt.date | None = None) -> VersionInfo:
    """The version of a layer a reader names: by its number, the one in force on a date, or (neither)
    the current one.

    Raises
    ------
    InvalidInput
        When both are given.
    NotFound
        When the layer has no such version.
    """
    if number is not None and as_of is not None:
        raise InvalidInput("give a version or as_of, not both")
    if number is not None:
        found = next((v for v in layer_versions(conn, code) if v.version == number), None)
        if found is None:
            raise NotFound(f"layer {code} has no version {number} (`blueprint layers versions {code}` lists them)")
        return found
    found = versions_as_of(conn, as_of, code).get(code)  # one layer's row: this is on the map's click path
    if found is None:
        raise NotFound(f"layer {code} has no loaded version" if as_of is None
                       else f"layer {code} had no version in force on {as_of.isoformat()}")
    return found


def list_layers(conn: sa.Connection, catalogue: Catalogue | None = None) -> list[dict]:
    """Every catalogue layer with its current version (or None), feature count and extent."""
    catalogue = catalogue or load_catalogue()
    current = current_versions(conn)
    counts = dict(conn.execute(sa.text(
        "SELECT layer_code, count(*) FROM layer_version GROUP BY layer_code")).all())
    out = []
    for minor in catalogue.minors.values():
        version = current.get(minor.code)
        out.append({
            "code": minor.code,
            "name_zh": minor.name_zh,
            "name_en": minor.name_en,
            "geometry_type": minor.geometry_type,
            "control_level": minor.control_level,
            "versions": counts.get(minor.code, 0),
            "current_version": version.as_dict() if version else None,
            "feature_count": version.feature_count if version else 0,
            "extent": list(version.extent) if version and version.extent else None,
        })
    return out
