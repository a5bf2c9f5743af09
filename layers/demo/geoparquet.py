"""Deterministic GeoParquet (1.1, WKB) writing, typed by the catalogue.

Written with pyarrow directly and only fixed metadata (no pandas index, no timestamps), so the
same features always give the same bytes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from layers.catalogue import Minor

ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
               "date": pa.date32(), "boolean": pa.bool_()}  # fmt: skip
TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}  # shapely type ids
GEOMETRY_TYPES = {"polygon": {"Polygon", "MultiPolygon"}, "line": {"LineString"}, "point": {"Point"}}


@lru_cache(maxsize=4)
def projjson(srid: int) -> dict:
    """PROJJSON of an EPSG code, for the GeoParquet ``crs`` field."""
    return CRS.from_epsg(srid).to_json_dict()


def write_geoparquet(
    path: Path, geoms: np.ndarray, columns: dict[str, pa.Array], srid: int, geometry_types: set[str] | None = None
) -> None:
    """Write ``fid``, ``columns`` (in order) and ``geometry`` as one GeoParquet file.

    Raises
    ------
    ValueError
        If a geometry is empty or of a type outside ``geometry_types``.
    """
    names = sorted({TYPE_NAMES[t] for t in shapely.get_type_id(geoms).tolist()})
    if geometry_types is not None and not set(names) <= geometry_types:
        raise ValueError(f"{path.name}: geometry types {names} not in {sorted(geometry_types)}")
    if len(geoms) and shapely.is_empty(geoms).any():
        raise ValueError(f"{path.name}: empty geometry")
    bounds = shapely.total_bounds(geoms) if len(geoms) else np.zeros(4)
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {
            "geometry": {
                "encoding": "WKB",
                "geometry_types": names,
                "crs": projjson(srid),
                "bbox": [float(b) for b in bounds],
                "edges": "planar",
            }
        },
    }
    arrays = {
        "fid": pa.array(np.arange(1, len(geoms) + 1, dtype=np.int64)),
        **columns,
        "geometry": pa.array(shapely.to_wkb(geoms, byte_order=1, flavor="iso"), pa.binary()),
    }
    table = pa.table(arrays).replace_schema_metadata({"geo": json.dumps(geo, separators=(",", ":"))})
    pq.write_table(table, path, compression="zstd", compression_level=3)


def catalogue_columns(minor: Minor, columns: dict, n: int) -> dict[str, pa.Array]:
    """The layer's attribute columns in catalogue order and types; missing optional ones are null.

    Raises
    ------
    ValueError
        If a column the catalogue requires is missing or has nulls, or a column has the wrong length.
    """
    out = {}
    for attr in minor.attributes:
        values = columns.get(attr.name)
        if values is None:
            if attr.required:
                raise ValueError(f"layer {minor.code}: required attribute {attr.name} missing")
            out[attr.name] = pa.nulls(n, ARROW_TYPES[attr.type])
            continue
        arr = pa.array(values, type=ARROW_TYPES[attr.type], from_pandas=True)
        if len(arr) != n:
            raise ValueError(f"layer {minor.code}: {attr.name} has {len(arr)} values for {n} features")
        if attr.required and arr.null_count:
            raise ValueError(f"layer {minor.code}: required attribute {attr.name} has nulls")
        out[attr.name] = arr
    extra = set(columns) - {a.name for a in minor.attributes}
    if extra:
        raise ValueError(f"layer {minor.code}: attributes {sorted(extra)} are not in the catalogue")
    return out
