"""From base faces to layers: dissolving faces by attributes, and the shared context of the
layer builders in :mod:`layers.demo.layers_current`, :mod:`layers.demo.layers_plans` and
:mod:`layers.demo.layers_other`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from layers.demo.fields import Fields
from layers.demo.networks import Heritage, Line
from layers.demo.planting import Plan
from layers.demo.sources import Districts
from layers.demo.water import WaterBody
from layers.demo.zoning import FaceTable


@dataclass
class Layer:
    """One generated vector layer: geometries and catalogue attribute columns (same length)."""

    code: str
    geoms: np.ndarray
    columns: dict[str, list | np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geoms)


@dataclass
class Context:
    """Everything a layer builder reads."""

    faces: FaceTable
    fields: Fields
    districts: Districts
    water: list[WaterBody]
    lines: list[Line]
    heritage: list[Heritage]
    plan: Plan
    seed: int
    scale: int
    cache: dict = field(default_factory=dict)  # results shared between builders

    def rng(self, code: str) -> np.random.Generator:
        """An independent generator per layer, so adding a layer never shifts another."""
        return np.random.default_rng([self.seed, int(code), self.scale])

    @property
    def t(self) -> pd.DataFrame:
        """The face table (one row per base face)."""
        return self.faces.table

    def units(self, urban_km: float, rural_km: float, isolate_pieces: bool = True) -> np.ndarray:
        """Dissolve units: a square grid, finer inside the development boundary, that shrinks
        with ``scale``. Planted pieces get their own unit (their group), so they never merge
        with ordinary faces, unless ``isolate_pieces`` is false."""
        t = self.t
        size = np.where(t["devb"].to_numpy() != "", urban_km, rural_km) * 1000 / np.sqrt(self.scale)
        ix = np.floor(t["x"].to_numpy() / size).astype(np.int64)
        iy = np.floor(t["y"].to_numpy() / size).astype(np.int64)
        unit = (size.astype(np.int64) * 1_000_000 + ix) * 10_000_000 + iy
        group = t["group"].to_numpy()
        return np.where((group < 0) & isolate_pieces, group, unit)

    def parcels(self) -> np.ndarray:
        """One key per face, except that the pieces of one planted parcel share theirs."""
        return self.t["group"].to_numpy()


def dissolve(geoms: np.ndarray, keys: pd.DataFrame, explode: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Union faces that share every key column; optionally split results into single polygons.

    Faces form a coverage (shared edges match exactly), so the union is a coverage union: it
    only drops shared edges and never computes new vertices.

    Returns
    -------
    (geometries, keys)
        One row per output feature, in order of first appearance of each key.
    """
    if len(keys) == 0:
        return np.array([], dtype=object), keys.reset_index(drop=True)
    gid = keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy()
    order = np.argsort(gid, kind="stable")
    counts = np.bincount(gid)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = order[starts]
    out = np.empty(len(counts), dtype=object)
    single = counts == 1
    out[single] = geoms[first[single]]
    members = order[~single[gid[order]]]  # faces of multi-face groups, sorted by group
    if len(members):
        out[~single] = _coverage_unions(geoms[members], gid[members])
    rows = keys.iloc[first].reset_index(drop=True)
    if not explode:
        return out, rows
    parts, idx = shapely.get_parts(out, return_index=True)
    return parts, rows.iloc[idx].reset_index(drop=True)


def _coverage_unions(geoms: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Coverage union of each group of ``geoms`` (sorted by group number ``gid``).

    One vectorized call: ``shapely.lib.coverage_union`` is the ufunc behind
    ``shapely.coverage_union_all``, applied here to one collection per group.
    """
    _, ordinal = np.unique(gid, return_inverse=True)
    collections = shapely.geometrycollections(geoms, indices=ordinal)
    try:
        return shapely.lib.coverage_union(collections)
    except AttributeError:  # a shapely without the ufunc: one call per group
        return np.array([shapely.coverage_union_all(shapely.get_parts(c)) for c in collections], dtype=object)


def from_faces(
    ctx: Context,
    code: str,
    mask: np.ndarray,
    keys: dict[str, np.ndarray],
    by: np.ndarray | None = None,
    explode: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Dissolve the faces in ``mask`` by ``keys`` (plus ``by``, e.g. units or parcels)."""
    frame = pd.DataFrame({k: np.asarray(v)[mask] for k, v in keys.items()})
    if by is not None:
        frame["_by"] = by[mask]
    geoms, rows = dissolve(ctx.faces.geoms[mask], frame, explode)
    return geoms, rows.drop(columns=["_by"], errors="ignore")


def district_of(ctx: Context, geoms: np.ndarray) -> np.ndarray:
    """Index of the district holding a point inside each geometry."""
    rep = shapely.point_on_surface(geoms)
    x, y = shapely.get_x(rep), shapely.get_y(rep)
    out = np.zeros(len(geoms), dtype=np.int64)
    for i, d in enumerate(ctx.districts.geoms):
        out[shapely.contains_xy(d, x, y)] = i
    return out
