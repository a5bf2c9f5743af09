"""A stored version's features as a GeoDataFrame (in the storage CRS).

Apart from ``layers.store`` so that listing layers and versions (the command line, migrations)
does not import geopandas.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import orjson
import pandas as pd
import shapely
import sqlalchemy as sa

from layers import store


def read_features(conn: sa.Connection, *, version_id: int, srid: int) -> gpd.GeoDataFrame:
    """The features of one version as a GeoDataFrame in the storage CRS: fid, attributes, geometry.

    Fetched in binary (WKB as bytes, not hex) with the attributes as JSON text parsed in one
    orjson call: decoding ``jsonb`` row by row with the standard library took half of the 2–3 s
    that reading 100k polygons took (0.8–1.2 s now; measured ad hoc on the 2-core VM).
    """
    with conn.connection.driver_connection.cursor(binary=True) as cur:
        cur.execute("SELECT fid, props::text, ST_AsBinary(geom) FROM feature WHERE version_id = %s ORDER BY fid",
                    (version_id,))
        rows = cur.fetchall()
    if not rows:
        return gpd.GeoDataFrame({"fid": pd.Series([], dtype="int64")}, geometry=gpd.GeoSeries([]),
                                crs=f"EPSG:{srid}")
    # Ingest writes props with orjson (layers.ingest.copy_rows): finite doubles and 64-bit integers, which
    # orjson reads back; a double PostgreSQL prints in full (1e20 as 100000000000000000000) stays a float.
    attributes = pd.DataFrame.from_records(orjson.loads("[" + ",".join(row[1] for row in rows) + "]"))
    geometry = shapely.from_wkb(np.fromiter((row[2] for row in rows), dtype=object, count=len(rows)))
    frame = gpd.GeoDataFrame(attributes, geometry=geometry, crs=f"EPSG:{srid}")
    frame.insert(0, "fid", np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
    return frame


def read_layer(conn: sa.Connection, code: str, *, srid: int) -> gpd.GeoDataFrame:
    """The current version of a layer as a GeoDataFrame."""
    return read_features(conn, version_id=store.chosen_version(conn, code).id, srid=srid)
