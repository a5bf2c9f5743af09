"""Preparing a read frame for storage: CRS, geometry checks and repair, attribute validation.

Each step either returns a cleaner frame and what it did, or raises ``InvalidInput`` with one line
naming the problem. Nothing here touches the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from layers.catalogue import Attribute, Minor
from layers.errors import InvalidInput
from layers.ingest import wkb as wkb_
from layers.ingest.sources import PlanFeatures

ALLOWED_TYPES = {
    "polygon": {"Polygon", "MultiPolygon"},
    "line": {"LineString", "MultiLineString"},
    "point": {"Point", "MultiPoint"},
}
# shapely's geometry type ids, shifted by one so that -1 (missing) indexes "Missing".
_TYPE_NAMES = np.array(["Missing", "Point", "LineString", "LinearRing", "Polygon", "MultiPoint",
                        "MultiLineString", "MultiPolygon", "GeometryCollection"])
ALLOWED_TYPE_IDS = {kind: sorted(_TYPE_NAMES.tolist().index(name) - 1 for name in names)
                    for kind, names in ALLOWED_TYPES.items()}
REPORT_EXAMPLES = 20  # how many repaired features the report lists by id and place


@dataclass
class PrepareReport:
    source_crs: str = ""
    reprojected: bool = False
    repaired: int = 0
    repairs: list[dict] = field(default_factory=list)
    extra_attributes: list[str] = field(default_factory=list)


def parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise InvalidInput(f"unknown CRS {text!r}; give it as EPSG:XXXX") from None


def storage_crs_transform(crs: CRS | None, *, srid: int, crs_override: str | None,
                          report: PrepareReport) -> Transformer | None:
    """The transformer from the data's CRS (``crs_override`` when given) to the storage CRS; None
    when they are the same. Records the source CRS in ``report``."""
    if crs_override:
        crs = parse_crs(crs_override)
    elif crs is None:
        raise InvalidInput("the file has no CRS: give one with --crs EPSG:XXXX")
    source = CRS.from_user_input(crs)
    report.source_crs = source.to_string()
    target = CRS.from_epsg(srid)
    if source.equals(target, ignore_axis_order=True):
        return None
    report.reprojected = True
    return Transformer.from_crs(source, target, always_xy=True)


def to_storage_crs(frame: gpd.GeoDataFrame, *, srid: int, crs_override: str | None,
                   report: PrepareReport) -> gpd.GeoDataFrame:
    """A frame in the storage CRS (for the site and preview readers; ingest reprojects WKB)."""
    transformer = storage_crs_transform(CRS.from_user_input(frame.crs) if frame.crs is not None else None,
                                        srid=srid, crs_override=crs_override, report=report)
    target = CRS.from_epsg(srid)
    if transformer is None:
        return frame.set_crs(target, allow_override=True)
    out = frame.set_crs(report.source_crs, allow_override=True).to_crs(target)
    _check_finite(shapely.get_coordinates(out.geometry.values), report, srid)
    return out


def reproject(wkb: pa.LargeBinaryArray, transformer: Transformer | None, *, report: PrepareReport,
              srid: int) -> pa.LargeBinaryArray:
    """WKB geometries through ``transformer`` (None: unchanged); every coordinate must land."""
    if transformer is None:
        return wkb

    def landed(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        moved = transformer.transform(x, y)
        _check_finite(np.asarray(moved), report, srid)
        return moved

    return wkb_.transform(wkb, landed)


def _check_finite(coordinates: np.ndarray, report: PrepareReport, srid: int) -> None:
    if not np.isfinite(coordinates).all():
        raise InvalidInput(f"some coordinates cannot be transformed from {report.source_crs} "
                           f"to EPSG:{srid}: is --crs right?")


def prepare_features(features: PlanFeatures, *, minor: Minor, srid: int, crs_override: str | None,
                     report: PrepareReport) -> tuple[np.ndarray, pa.LargeBinaryArray, pd.DataFrame]:
    """``(fids, wkb, attributes)`` to store: ids, geometries checked, as 2D WKB in the storage CRS,
    and attributes checked against the catalogue (validity runs later, beside the COPY)."""
    transformer = storage_crs_transform(features.crs, srid=srid, crs_override=crs_override, report=report)
    fids = feature_ids(features.attributes, features.fids)
    wkb = check_geometries(features.geometry, minor=minor, fids=fids)
    wkb = reproject(wkb, transformer, report=report, srid=srid)
    return fids, wkb, check_attributes(features.attributes, minor=minor, fids=fids, report=report)


def check_geometries(geometry: pa.Array | np.ndarray, *, minor: Minor, fids: np.ndarray) -> pa.LargeBinaryArray:
    """Check geometries (WKB, or shapely objects) and return them as 2D little-endian WKB.

    Missing, empty or unreadable geometries and geometries of the wrong kind are errors: nothing
    is dropped silently. Z and M values are dropped (storage is 2D). One-ring polygons read from
    WKB are checked from their heads (``wkb.plain_rings``); only the others are decoded.

    Validity itself is not checked here: ``write_version(repair=GeometryRepair(...))`` runs it
    while the COPY and the index build run on the server.
    """
    if isinstance(geometry, np.ndarray):
        return wkb_.wkb_array(_checked_objects(geometry, minor=minor, fids=fids))
    wkb = wkb_.as_wkb_array(geometry)
    plain = wkb_.plain_rings(wkb) if minor.geometry_type == "polygon" else np.zeros(len(wkb), dtype=bool)
    rest = np.flatnonzero(~plain)
    if not len(rest):
        return wkb
    encoded = wkb_.take(wkb, rest)
    decoded = shapely.from_wkb(encoded.to_numpy(zero_copy_only=False), on_invalid="ignore")
    unreadable = shapely.is_missing(decoded) & ~encoded.is_null().to_numpy(zero_copy_only=False)
    if unreadable.any():
        raise InvalidInput(f"{int(unreadable.sum())} features have unreadable geometries "
                           f"(fid {_examples(fids[rest][unreadable])})")
    checked = _checked_objects(decoded, minor=minor, fids=fids[rest])
    return wkb_.replace(wkb, rest, wkb_.wkb_array(checked))


def _checked_objects(geoms: np.ndarray, *, minor: Minor, fids: np.ndarray) -> np.ndarray:
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        raise InvalidInput(f"{int(missing.sum())} features have no geometry "
                           f"(fid {_examples(fids[missing])})")
    type_ids = shapely.get_type_id(geoms)
    wrong = ~np.isin(type_ids, ALLOWED_TYPE_IDS[minor.geometry_type])
    if wrong.any():
        found = sorted(set(_TYPE_NAMES[type_ids[wrong] + 1]))
        raise InvalidInput(f"layer {minor.code} takes {minor.geometry_type} geometries but "
                           f"{int(wrong.sum())} features are {', '.join(found)} "
                           f"(fid {_examples(fids[wrong])})")
    return geoms


class GeometryRepair:
    """Repair of one layer's invalid geometries.

    ``write_version`` runs ``validity.valid_and_bounds`` beside its COPY and ``repair`` on the few
    invalid geometries it finds; ``record`` keeps the report's count and first examples.

    Examples
    --------
    >>> from layers.catalogue import load_catalogue
    >>> report = PrepareReport()
    >>> repair = GeometryRepair(minor=load_catalogue().minor("2301"), report=report)
    >>> bowtie = shapely.from_wkt("POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))")
    >>> geoms = np.array([shapely.box(0, 0, 1, 1), bowtie])
    >>> from layers.ingest.validity import is_valid
    >>> bad = ~is_valid(wkb_.wkb_array(geoms))
    >>> fixed, repairs = repair.repair(geoms[bad], np.array([1, 2])[bad])
    >>> repair.record(repairs)
    >>> report.repaired, report.repairs[0]["fid"], fixed[0].geom_type
    (1, 2, 'MultiPolygon')
    """

    def __init__(self, *, minor: Minor, report: PrepareReport) -> None:
        self.minor = minor
        self.report = report

    def repair(self, invalid: np.ndarray, fids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """``make_valid`` versions of invalid geometries, kept to the layer's kind, and why each was
        invalid; raises ``InvalidInput`` when one cannot be repaired."""
        reasons = shapely.is_valid_reason(invalid)
        repaired = _polygonal_or_same(shapely.make_valid(invalid), self.minor.geometry_type)
        bad = shapely.is_empty(repaired) | ~shapely.is_valid(repaired)
        if bad.any():
            raise InvalidInput(f"{int(bad.sum())} invalid geometries could not be repaired "
                               f"(fid {_examples(fids[bad])})")
        return repaired, [{"fid": int(fid), "reason": str(reason)} for fid, reason in zip(fids, reasons, strict=True)]

    def record(self, repairs: list[dict]) -> None:
        """Add one chunk's repairs to the report (call in feature order)."""
        self.report.repaired += len(repairs)
        room = REPORT_EXAMPLES - len(self.report.repairs)
        if room > 0:
            self.report.repairs.extend(repairs[:room])

    def summary(self) -> dict:
        """What the report says so far: ``{"repaired": count, "repairs": [first examples]}``."""
        return {"repaired": self.report.repaired, "repairs": list(self.report.repairs)}


def _polygonal_or_same(geoms: np.ndarray, geometry_type: str) -> np.ndarray:
    """After make_valid a polygon may become a collection with stray lines: keep its polygons."""
    if geometry_type != "polygon":
        return geoms
    out = geoms.copy()
    collections = shapely.get_type_id(out) == 7
    for i in np.flatnonzero(collections):
        parts = shapely.get_parts(out[i])
        polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
        out[i] = shapely.union_all(polys) if len(polys) else shapely.Polygon()
    return out


def _examples(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (", …" if len(values) > n else "")


def feature_ids(attributes: pd.DataFrame, file_fids: np.ndarray | None = None) -> np.ndarray:
    """The features' ids: the file's own (a GeoPackage's primary key), else a ``fid`` column when
    present, else 1..n; they must be unique whole numbers."""
    if file_fids is not None:
        values = pd.Series(file_fids)
    else:
        column = next((c for c in attributes.columns if str(c).lower() == "fid"), None)
        if column is None:
            return np.arange(1, len(attributes) + 1, dtype=np.int64)
        values = pd.to_numeric(attributes[column], errors="coerce")
    if values.isna().any() or (values % 1 != 0).any():
        raise InvalidInput("the fid column holds values that are not whole numbers")
    fids = values.to_numpy(dtype=np.int64)
    if len(np.unique(fids)) != len(fids):
        raise InvalidInput("the fid column repeats ids; each feature needs its own")
    return fids


def check_attributes(frame: pd.DataFrame, *, minor: Minor, fids: np.ndarray,
                     report: PrepareReport) -> pd.DataFrame:
    """Match columns (geometry excluded) to the catalogue schema (case-insensitively), check and
    coerce them.

    Returns the attribute frame to store: catalogue attributes first, then any extra columns.
    """
    by_lower = {str(c).lower(): c for c in frame.columns}
    by_lower.pop("fid", None)
    out: dict[str, pd.Series] = {}
    for attr in minor.attributes:
        source = by_lower.pop(attr.name.lower(), None)
        if source is None and len(attr.name) > 10:
            # Shapefiles (dBase) cut field names to 10 characters.
            source = by_lower.pop(attr.name.lower()[:10], None)
        if source is None:
            if attr.required:
                raise InvalidInput(f"layer {minor.code} needs attribute {attr.name!r}, "
                                   "which the file lacks")
            continue
        out[attr.name] = _check_column(frame[source], attr, minor.code, fids)
    for lower, source in by_lower.items():
        out[lower] = frame[source]
    report.extra_attributes = sorted(by_lower)
    return pd.DataFrame(out, index=frame.index)


def _check_column(series: pd.Series, attr: Attribute, code: str, fids: np.ndarray) -> pd.Series:
    where = f"layer {code} attribute {attr.name!r}"
    missing = series.isna().to_numpy()
    if attr.required and missing.any():
        raise InvalidInput(f"{where} is required but empty for {int(missing.sum())} features "
                           f"(fid {_examples(fids[missing])})")
    if attr.type in ("integer", "number"):
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna().to_numpy() & ~missing
        if attr.type == "integer":
            bad |= (values.notna() & (values % 1 != 0)).to_numpy()
        if bad.any():
            raise InvalidInput(f"{where} must be {attr.type} but {int(bad.sum())} values are not "
                               f"(fid {_examples(fids[bad])})")
        out_of_range = np.zeros(len(values), dtype=bool)
        if attr.min is not None:
            out_of_range |= (values < attr.min).fillna(False).to_numpy()
        if attr.max is not None:
            out_of_range |= (values > attr.max).fillna(False).to_numpy()
        if out_of_range.any():
            raise InvalidInput(f"{where} must lie in [{attr.min}, {attr.max}] but "
                               f"{int(out_of_range.sum())} values do not "
                               f"(fid {_examples(fids[out_of_range])})")
        series = values.astype("Int64") if attr.type == "integer" else values.astype("float64")
    elif attr.type == "date":
        values = pd.to_datetime(series, errors="coerce")
        bad = values.isna().to_numpy() & ~missing
        if bad.any():
            raise InvalidInput(f"{where} must be a date but {int(bad.sum())} values are not "
                               f"(fid {_examples(fids[bad])})")
        series = values.dt.strftime("%Y-%m-%d")
    elif attr.type == "boolean":
        series = series.astype("boolean")
    else:
        series = series.astype("string")
        if attr.pattern:
            ok = series.str.fullmatch(re.compile(attr.pattern)).fillna(True).to_numpy(dtype=bool)
            if not ok.all():
                raise InvalidInput(f"{where} does not match {attr.pattern} for "
                                   f"{int((~ok).sum())} values (fid {_examples(fids[~ok])})")
    if attr.values is not None:
        allowed = {str(v) for v in attr.values}
        present = series.astype("string")
        bad = (~present.isin(allowed) & present.notna()).to_numpy(dtype=bool)
        if bad.any():
            found = sorted(set(present[bad].astype(str)))[:5]
            raise InvalidInput(f"{where} has values outside its allowed list: {', '.join(found)} "
                               f"(fid {_examples(fids[bad])})")
    return series
