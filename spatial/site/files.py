"""A site from a file, as the same request the HTTP API takes (so the CLI gives the same answer).

A ``.json``/``.geojson`` file may hold the request body itself (``{"geometry": …, "crs": …}``), a
GeoJSON geometry, a Feature, or a FeatureCollection (its polygons together form the site). Other
vector formats (GeoPackage, Shapefile, FlatGeobuf, GeoParquet) are read through the ingest reader
and passed on in the storage CRS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from layers.errors import InvalidInput
from layers.ingest.prepare import PrepareReport, to_storage_crs
from layers.ingest.sources import open_source, read_source
from spatial.site.request import parse_json

JSON_SUFFIXES = {".json", ".geojson"}


def read_site_file(path: str | Path, *, storage_srid: int) -> dict[str, Any]:
    """The request body for the site in ``path``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{path}: no such file")
    if p.suffix.lower() in JSON_SUFFIXES:
        if p.stat().st_size > 64 * 1024 * 1024:
            raise InvalidInput(f"{p.name} is too large to be a site")
        return _from_json(parse_json(p.read_bytes()), p.name)
    frame = read_source(open_source(p))
    if len(frame) == 0:
        raise InvalidInput(f"{p.name} has no features")
    frame = to_storage_crs(gpd.GeoDataFrame(frame), srid=storage_srid, crs_override=None, report=PrepareReport())
    return {"geometry": _combined(list(frame.geometry.values), p.name), "crs": f"EPSG:{storage_srid}"}


def _from_json(data: Any, name: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"{name} is not a JSON object")
    kind = data.get("type")
    if kind == "FeatureCollection":
        features = data.get("features") or []
        try:
            geoms = [shapely.geometry.shape(f["geometry"]) for f in features
                     if isinstance(f, dict) and f.get("geometry")]
        except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
            raise InvalidInput(f"{name}: a feature's geometry is not valid GeoJSON ({exc})") from None
        body = {"geometry": _combined(geoms, name)}
        if data.get("crs") is not None:
            body["crs"] = data["crs"]
        return body
    if kind is not None:
        body = {"geometry": data}
        if data.get("crs") is not None:
            body["crs"] = data["crs"]
        return body
    return data  # the request body itself


def _combined(geoms: list, name: str) -> dict:
    """One GeoJSON (Multi)Polygon of all polygonal features (coordinates kept as read)."""
    parts = [p for g in geoms for p in shapely.get_parts(g) if p.geom_type == "Polygon"]
    if not parts:
        raise InvalidInput(f"{name} has no polygon to check")
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return shapely.geometry.mapping(geom)
