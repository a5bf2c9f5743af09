"""A stored version's features as a GeoDataFrame (in the storage CRS).

Apart from ``layers.store`` so that listing layers and versions (the command line, migrations)
does not import geopandas.
"""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import shapely
import sqlalchemy as sa

from layers import store


def read_features(conn: sa.Connection, *, version_id: int, srid: int,
                  bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
    """The features of one version as a GeoDataFrame in the storage CRS: fid, attributes, geometry."""
    where = "version_id = :vid"
    params: dict = {"vid": version_id}
    if bbox is not None:
        where += " AND geom && ST_MakeEnvelope(:x0, :y0, :x1, :y1, :srid)"
        params.update(x0=bbox[0], y0=bbox[1], x1=bbox[2], y1=bbox[3], srid=srid)
    rows = conn.execute(
        sa.text(f"SELECT fid, props, ST_AsBinary(geom) FROM feature WHERE {where} ORDER BY fid"),
        params,
    ).all()
    if not rows:
        return gpd.GeoDataFrame({"fid": pd.Series([], dtype="int64")}, geometry=gpd.GeoSeries([]),
                                crs=f"EPSG:{srid}")
    fids, props, wkb = zip(*rows, strict=True)
    attributes = pd.DataFrame.from_records(props)
    frame = gpd.GeoDataFrame(attributes, geometry=shapely.from_wkb(list(wkb)), crs=f"EPSG:{srid}")
    frame.insert(0, "fid", list(fids))
    return frame


def read_layer(conn: sa.Connection, code: str, *, srid: int, version_id: int | None = None,
               bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
    """The current (or a given) version of a layer as a GeoDataFrame."""
    if version_id is None:
        version_id = store.chosen_version(conn, code).id
    return read_features(conn, version_id=version_id, srid=srid, bbox=bbox)
