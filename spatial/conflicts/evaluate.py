"""Evaluate one conflict rule on two layers' features: select, overlay, drop slivers.

Pure function of its inputs (no database): the caller reads the two layers' current versions and
records which versions it read.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS

from spatial.conflicts.rules import Rule
from spatial.conflicts.selection import harmonise, select
from spatial.overlay import difference_from, intersect_pairs

COLUMNS = ["rule", "a_fid", "b_fid", "geometry", "area_m2"]


def evaluate_rule(
    rule: Rule, a_gdf: gpd.GeoDataFrame, b_gdf: gpd.GeoDataFrame, *, threads: int = 2
) -> gpd.GeoDataFrame:
    """Find the conflicts of one rule between the features of its two layers.

    Parameters
    ----------
    rule : Rule
        A validated rule (see :func:`spatial.conflicts.rules.load_rules`).
    a_gdf, b_gdf : geopandas.GeoDataFrame
        Features of ``rule.a.layer`` and ``rule.b.layer`` with a ``fid`` column and the catalogue
        attributes as columns, in one projected CRS.
    threads : int, default 2
        Worker threads for the overlay.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``rule, a_fid, b_fid, geometry, area_m2``, one row per conflict piece of at least
        ``rule.min_area_m2``; geometries are Polygons or MultiPolygons in the input CRS. For a
        ``difference`` rule ``b_fid`` is missing (the piece lies outside every selected b feature).

    Raises
    ------
    ValueError
        The frames lack a ``fid`` or attribute column, have no CRS, different CRSs, or a
        geographic CRS (areas would be in square degrees).

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> from spatial.conflicts.rules import load_rules
    >>> plan = gpd.GeoDataFrame({"fid": [1], "ydlb": ["R2"]}, geometry=[shapely.box(0, 0, 100, 100)], crs=4548)
    >>> redline = gpd.GeoDataFrame({"fid": [7]}, geometry=[shapely.box(50, 0, 200, 100)], crs=4548)
    >>> evaluate_rule(load_rules().rule("CT03"), plan, redline)[["rule", "a_fid", "b_fid", "area_m2"]]
       rule  a_fid  b_fid  area_m2
    0  CT03      1      7   5000.0
    """
    crs = _common_crs(rule, a_gdf, b_gdf)
    a = a_gdf[select(a_gdf, rule.a)]
    b = b_gdf[select(b_gdf, rule.b)]
    a_geom, b_geom = np.asarray(a.geometry.values, dtype=object), np.asarray(b.geometry.values, dtype=object)

    if rule.operation == "difference":
        rest = difference_from(a_geom, b_geom, threads=threads)
        a_idx, b_idx, geom, area = rest.left_index, None, rest.geometry, rest.area
    elif rule.compare is None:
        a_idx, b_idx, geom, area = intersect_pairs(a_geom, b_geom, threads=threads)
    else:
        a_idx, b_idx, geom, area = _intersect_differing(rule, a, b, a_geom, b_geom, threads)

    keep = area >= rule.min_area_m2
    a_fid = a["fid"].to_numpy()[a_idx[keep]]
    if b_idx is None:
        b_fid = pd.array([pd.NA] * int(keep.sum()), dtype=_nullable(b_gdf["fid"].dtype))
    else:
        b_fid = b["fid"].to_numpy()[b_idx[keep]]
    frame = {"rule": np.full(int(keep.sum()), rule.code, dtype=object), "a_fid": a_fid, "b_fid": b_fid}
    return gpd.GeoDataFrame({**frame, "geometry": geom[keep], "area_m2": area[keep]}, geometry="geometry", crs=crs)[
        COLUMNS
    ]


def _intersect_differing(
    rule: Rule, a: pd.DataFrame, b: pd.DataFrame, a_geom: np.ndarray, b_geom: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersect only pairs whose harmonised values differ, in one overlay.

    The values become integer codes shared by both sides, so the pair filter is one array
    comparison run before any geometry work. Features whose value does not harmonise cannot be
    compared and are left out.
    """
    compare = rule.compare
    assert compare is not None
    for side, frame, name in ((rule.a, a, compare.a_field), (rule.b, b, compare.b_field)):
        if name not in frame.columns:
            raise ValueError(f"features of layer {side.layer} have no column {name!r}")
    a_val = harmonise(a[compare.a_field], compare.via)
    b_val = harmonise(b[compare.b_field], compare.via)
    codes, _ = pd.factorize(pd.Series(np.concatenate([a_val, b_val]), dtype=object), use_na_sentinel=True)
    a_code, b_code = codes[: len(a_val)], codes[len(a_val) :]  # -1: no class

    def differing(li: np.ndarray, ri: np.ndarray) -> np.ndarray:
        ac, bc = a_code[li], b_code[ri]
        return (ac != bc) & (ac >= 0) & (bc >= 0)

    return tuple(intersect_pairs(a_geom, b_geom, threads=threads, pair_filter=differing))


def _common_crs(rule: Rule, a_gdf: gpd.GeoDataFrame, b_gdf: gpd.GeoDataFrame) -> CRS:
    for side, frame in ((rule.a, a_gdf), (rule.b, b_gdf)):
        if "fid" not in frame.columns:
            raise ValueError(f"rule {rule.code}: features of layer {side.layer} have no fid column")
        if frame.crs is None:
            raise ValueError(f"rule {rule.code}: features of layer {side.layer} have no CRS")
    if a_gdf.crs != b_gdf.crs:
        raise ValueError(
            f"rule {rule.code}: layers {rule.a.layer} and {rule.b.layer} are in different CRSs "
            f"({a_gdf.crs.to_string()} vs {b_gdf.crs.to_string()})"
        )
    if a_gdf.crs.is_geographic:
        raise ValueError(f"rule {rule.code}: CRS {a_gdf.crs.to_string()} is geographic; overlay needs a projected CRS")
    return a_gdf.crs


def _nullable(dtype: np.dtype) -> str | np.dtype:
    """A dtype of the same kind that can hold a missing value."""
    return "Int64" if pd.api.types.is_integer_dtype(dtype) else "object"
