"""Exporting the conflict register (and other result frames): GeoPackage, GeoJSON, Excel.

GeoPackage keeps the storage CRS (areas stay exact); GeoJSON is EPSG:4326 per RFC 7946; the Excel
workbook (openpyxl) has one sheet of conflicts with their centroids in longitude/latitude and
one sheet each of counts and areas by type and by district, for readers without a GIS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from pyogrio.errors import DataSourceError

from layers.errors import InvalidInput
from spatial.conflicts.listing import ROW_KEYS, ROW_SQL, Filters, where_sql
from spatial.conflicts.rules import RuleSet, load_rules
from spatial.conflicts.terms import EXPORT_FORMATS


def checked_output(path: str | Path, fmt: str | None = None) -> str:
    """The export format of an output file: the one given, else the file suffix. Checked before
    any work: ``InvalidInput`` if neither names a format, or the file cannot be made there."""
    fmt = (fmt or Path(path).suffix.lstrip(".")).lower()
    fmt = {"json": "geojson", "xlsx": "xlsx", "gpkg": "gpkg", "geojson": "geojson"}.get(fmt, fmt)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt or 'none'!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidInput(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise InvalidInput(f"cannot write {path}: it is a folder")
    return fmt


def conflict_table(frame: gpd.GeoDataFrame, rules: RuleSet | None = None) -> gpd.GeoDataFrame:
    """Register rows with the rule's names, advice and prevailing side; attributes as JSON text."""
    rules = rules or load_rules()
    known = {r.code: r for r in rules.rules}
    out = frame.copy()
    out.insert(2, "name_zh", [known[c].name_zh if c in known else None for c in out["rule"]])
    out.insert(3, "name_en", [known[c].name_en if c in known else None for c in out["rule"]])
    out["prevails"] = [known[c].prevails if c in known else None for c in out["rule"]]
    out["advice_zh"] = [known[c].advice_zh if c in known else None for c in out["rule"]]
    for column in ("a_attrs", "b_attrs"):
        out[column] = [json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else None for v in out[column]]
    out["b_fid"] = out["b_fid"].astype("Int64")
    return out


def export_conflicts(conn, path: str | Path, *, fmt: str | None = None, filters: Filters | None = None,
                     rules: RuleSet | None = None) -> int:
    """Write the register rows matching ``filters`` to a file; return how many.

    Parameters
    ----------
    conn : sqlalchemy.Connection
    path : the output file (overwritten).
    fmt : ``gpkg``, ``geojson`` or ``xlsx``; by default from the suffix.
    filters : e.g. ``Filters(run_id=3)`` for the conflicts one run found; default the live register.

    Examples
    --------
    >>> with engine.connect() as conn:  # doctest: +SKIP
    ...     export_conflicts(conn, "conflicts.xlsx")
    412
    """
    fmt = checked_output(path, fmt)
    table = conflict_table(read_frame(conn, filters or Filters()), rules)
    write_frame(table, path, fmt=fmt, layer="conflicts")
    return len(table)


def read_frame(conn, filters: Filters) -> gpd.GeoDataFrame:
    """Every conflict matching the filters as a GeoDataFrame in the storage CRS (for exports)."""
    where, params = where_sql(filters)
    rows = conn.execute(sa.text(
        f"SELECT {ROW_SQL}, c.a_attrs, c.b_attrs, ST_AsBinary(c.geom), ST_SRID(c.geom) FROM conflict c{where} "
        "ORDER BY c.id"), params).all()
    srid = rows[0][-1] if rows else conn.execute(sa.text("SELECT storage_srid FROM deployment")).scalar_one()
    frame = pd.DataFrame([r[:len(ROW_KEYS) + 2] for r in rows], columns=[*ROW_KEYS, "a_attrs", "b_attrs"])
    geometry = shapely.from_wkb([bytes(r[-2]) for r in rows]) if rows else []
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=f"EPSG:{srid}")


def write_frame(frame: gpd.GeoDataFrame, path: str | Path, *, fmt: str | None = None, layer: str = "features",
                summaries: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write a GeoDataFrame as GeoPackage (own CRS), GeoJSON (EPSG:4326) or Excel (centroid lon/lat).

    For Excel, ``summaries`` adds one sheet per entry; by default conflict frames get "by type"
    and "by district" sheets.
    """
    fmt = checked_output(path, fmt)
    path = Path(path)
    # Written beside the target and renamed over it: a failed or interrupted export leaves no
    # half-written file, and the file it would have replaced stays as it was.
    partial = path.with_name(f".partial-{path.name}")
    partial.unlink(missing_ok=True)
    try:
        if fmt == "gpkg":
            kind = {"geometry_type": "MultiPolygon"} if len(frame) == 0 else {"promote_to_multi": True}
            frame.to_file(partial, driver="GPKG", layer=layer, engine="pyogrio", **kind)
        elif fmt == "geojson":
            frame.to_crs(4326).to_file(partial, driver="GeoJSON", engine="pyogrio", RFC7946="YES",
                                       WRITE_NAME="NO")
        else:
            if summaries is None and "rule" in frame.columns:
                summaries = {"by type 按类型": _summary(frame, ["rule", "name_zh", "severity"]),
                             "by district 按区县": _summary(frame, ["district", "district_name"])}
            _write_xlsx(frame, partial, layer, summaries or {})
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError | DataSourceError):  # e.g. no room left, no permission
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise InvalidInput(f"cannot write {path}: {reason}") from None
        raise
    return path


def _summary(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    keys = [k for k in keys if k in frame.columns]
    grouped = frame.assign(**{k: frame[k].fillna("-") for k in keys}).groupby(keys, sort=True)
    return grouped["area_m2"].agg(count="size", area_m2="sum").reset_index()


def _write_xlsx(frame: gpd.GeoDataFrame, path: Path, sheet: str, summaries: dict[str, pd.DataFrame]) -> None:
    # The file is opened first: a write-only workbook that cannot be saved leaves its sheets'
    # row writers open, and they print tracebacks when collected.
    with open(path, "wb") as out:
        _fill_workbook(frame, sheet, summaries).save(out)


def _fill_workbook(frame: gpd.GeoDataFrame, sheet: str, summaries: dict[str, pd.DataFrame]) -> Workbook:
    book = Workbook(write_only=True)
    table = pd.DataFrame(frame.drop(columns=frame.geometry.name))
    if len(frame):
        centroids = shapely.centroid(frame.to_crs(4326).geometry.values)
        table["centroid_lon"], table["centroid_lat"] = shapely.get_x(centroids), shapely.get_y(centroids)
    for name, data in ((sheet, table), *summaries.items()):
        ws = book.create_sheet(title=name[:31])
        ws.append([_bold(ws, str(column)) for column in data.columns])
        for row in data.itertuples(index=False):
            ws.append([_excel(v) for v in row])
    return book


def _bold(ws, value: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=value)
    cell.font = Font(bold=True)
    return cell


def _excel(value):
    """Values openpyxl can store: NA → empty, numpy scalars → Python, timestamps → text."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):  # nested attributes of a GeoJSON source
        return json.dumps(value, ensure_ascii=False, default=str)
    return value
