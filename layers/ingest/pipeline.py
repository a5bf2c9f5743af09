"""Loading a plan file into its thematic layer: read → reproject → repair → attributes → copy → swap."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pyproj import CRS, Transformer
from rasterio.errors import RasterioIOError
from sqlalchemy.engine import Engine

from layers import db, store
from layers.catalogue import Catalogue, Minor, load_catalogue
from layers.errors import InvalidInput
from layers.ingest.prepare import GeometryRepair, PrepareReport, parse_crs, prepare_features
from layers.ingest.sources import PlanFeatures, file_sha256, open_raster_source, open_source, read_features
from layers.ingest.write import NewVersion, Progress, write_raster_version, write_version
from layers.settings import Settings


@dataclass
class LoadReport:
    """What a load did, in numbers."""

    layer_code: str
    version: int
    version_id: int
    source: str
    checksum: str
    features: int
    source_crs: str
    reprojected: bool
    repaired: int
    repairs: list[dict] = field(default_factory=list)
    extra_attributes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    unchanged: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.unchanged:
            return (f"layer {self.layer_code} unchanged: {self.source} is the source of the current version "
                    f"v{self.version} ({self.features:,} features); use --force to load it again")
        total = sum(self.timings.values())
        rate = self.features / total if total else 0.0
        text = (f"layer {self.layer_code} v{self.version}: {self.features:,} features from "
                f"{self.source} in {total:.2f} s ({rate:,.0f}/s); CRS {self.source_crs}"
                f"{' reprojected' if self.reprojected else ''}; {self.repaired} repaired")
        for repair in self.repairs[:5]:
            text += f"\n  repaired fid {repair['fid']}: {repair['reason']}"
        if self.extra_attributes:
            text += f"\n  kept attributes not in the catalogue: {', '.join(self.extra_attributes)}"
        return text


def load_layer(engine: Engine, settings: Settings, *, path: str | Path, layer_code: str,
               source_layer: str | None = None, crs: str | None = None,
               coverage: shapely.Geometry | None = None, valid_from: str | None = None,
               progress: Progress | None = None, catalogue: Catalogue | None = None,
               force: bool = False) -> LoadReport:
    """Load one plan file as a new, current version of a catalogue layer.

    Parameters
    ----------
    path : the file (GeoPackage, Shapefile or zipped Shapefile, GeoJSON, FlatGeobuf, GeoParquet;
        for raster layers a GeoTIFF).
    layer_code : the catalogue's minor class code, e.g. ``"2301"``.
    coverage : the area the plan covers, in the storage CRS; default the data's extent. A query
        outside it answers "unknown".
    force : load even when the file is byte-identical to the current version's source (by default
        that is reported as unchanged and no version is made).

    Raises
    ------
    InvalidInput, NotFound
        One-line reasons; the database is unchanged.

    Examples
    --------
    >>> report = load_layer(engine, settings, path="redline.gpkg", layer_code="2301")  # doctest: +SKIP
    >>> report.features  # doctest: +SKIP
    412
    """
    minor = (catalogue or load_catalogue()).minor(layer_code)
    if minor.geometry_type == "raster":
        return load_raster(engine, settings, path=path, minor=minor, crs=crs, valid_from=valid_from, force=force)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    source = open_source(path)
    # The checksum (0.06 s for bench/ingest.py's 61 MB GeoParquet) is computed while the file is
    # read: hashlib releases the GIL.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="checksum") as pool:
        checksum = pool.submit(file_sha256, source.path)
        features = read_features(source, source_layer=source_layer)
        if not force:
            unchanged = _unchanged_report(engine, minor.code, checksum.result(), source.path.name)
            if unchanged is not None:
                return unchanged
    timings["read"] = time.perf_counter() - started
    if progress:
        progress("read", len(features.attributes), len(features.attributes))
    return load_features(engine, settings, features, minor=minor, source_name=source.path.name,
                         checksum=checksum.result(), crs=crs, coverage=coverage, valid_from=valid_from,
                         progress=progress, timings=timings)


def _unchanged_report(engine: Engine, code: str, checksum: str, source_name: str) -> LoadReport | None:
    with engine.connect() as conn:
        current = store.current_versions(conn, code).get(code)
    if current is None or current.source_checksum != checksum:
        return None
    return LoadReport(layer_code=code, version=current.version, version_id=current.id, source=source_name,
                      checksum=checksum, features=current.feature_count, source_crs="", reprojected=False,
                      repaired=0, unchanged=True)


def load_frame(engine: Engine, settings: Settings, frame: gpd.GeoDataFrame, *, minor: Minor,
               source_name: str, checksum: str, **options) -> LoadReport:
    """Load an in-memory frame as a new version (the path platform-made layers take); ``options``
    as for ``load_features``."""
    return load_features(engine, settings, PlanFeatures.from_frame(frame), minor=minor,
                         source_name=source_name, checksum=checksum, **options)


def load_features(engine: Engine, settings: Settings, features: PlanFeatures, *, minor: Minor,
                  source_name: str, checksum: str, crs: str | None = None,
                  coverage: shapely.Geometry | None = None, valid_from: str | None = None,
                  progress: Progress | None = None,
                  timings: dict[str, float] | None = None) -> LoadReport:
    """Check, prepare and write read features as a new version of ``minor``'s layer."""
    timings = timings if timings is not None else {}
    count = len(features.attributes)
    if count == 0:
        raise InvalidInput(f"{source_name} has no features")
    started = time.perf_counter()
    report = PrepareReport()
    srid = settings.storage.storage_srid
    # Validity and repair run during the write, beside the COPY (see write_version).
    fids, wkb, attributes = prepare_features(features, minor=minor, srid=srid, crs_override=crs, report=report)
    timings["prepare"] = time.perf_counter() - started
    if progress:
        progress("prepare", count, count)

    started = time.perf_counter()
    new = NewVersion(
        layer_code=minor.code, source_name=source_name, source_checksum=checksum,
        source_crs=report.source_crs, srid=srid, valid_from=valid_from,
        report={"repaired": report.repaired, "repairs": report.repairs,
                "reprojected": report.reprojected, "extra_attributes": report.extra_attributes},
        coverage_wkb=_coverage_wkb(coverage),
    )
    version_id, version = write_version(engine, new, fids=fids, attributes=attributes, wkb=wkb,
                                        repair=GeometryRepair(minor=minor, report=report), progress=progress)
    timings["write"] = time.perf_counter() - started
    return LoadReport(
        layer_code=minor.code, version=version, version_id=version_id, source=source_name,
        checksum=checksum, features=len(fids), source_crs=report.source_crs,
        reprojected=report.reprojected, repaired=report.repaired, repairs=report.repairs,
        extra_attributes=report.extra_attributes, timings=timings,
    )


def _coverage_wkb(coverage: shapely.Geometry | None) -> bytes | None:
    if coverage is None:
        return None
    polygonal = shapely.get_parts(coverage)
    polygonal = polygonal[np.isin(shapely.get_type_id(polygonal), (3, 6))]
    if not len(polygonal):
        raise InvalidInput("the coverage must be a polygon")
    return shapely.to_wkb(shapely.multipolygons(shapely.get_parts(polygonal)))


def load_raster(engine: Engine, settings: Settings, *, path: str | Path, minor: Minor,
                crs: str | None = None, valid_from: str | None = None, force: bool = False) -> LoadReport:
    """Register a GeoTIFF/COG as a new version of a raster layer (the file is copied in)."""
    started = time.perf_counter()
    source = open_raster_source(path)
    checksum = file_sha256(source)
    if not force:
        unchanged = _unchanged_report(engine, minor.code, checksum, source.name)
        if unchanged is not None:
            return unchanged
    try:
        with rasterio.open(source) as ds:
            raster_crs = parse_crs(crs) if crs else (CRS(ds.crs.to_wkt()) if ds.crs else None)
            if raster_crs is None:
                raise InvalidInput("the raster has no CRS: give one with --crs EPSG:XXXX")
            bounds = ds.bounds
            ds.read(1, window=((0, min(1, ds.height)), (0, min(1, ds.width))))
    except RasterioIOError as exc:
        raise InvalidInput(f"{Path(path).name} is not a readable raster ({str(exc).splitlines()[0]})") from None
    srid = settings.storage.storage_srid
    to_storage = Transformer.from_crs(raster_crs, CRS.from_epsg(srid), always_xy=True)
    extent = shapely.box(*to_storage.transform_bounds(*bounds))
    settings.storage.raster_dir.mkdir(parents=True, exist_ok=True)
    target = settings.storage.raster_dir / f"{minor.code}-{checksum[:16]}.tif"
    shutil.copyfile(source, target)
    new = NewVersion(layer_code=minor.code, source_name=Path(path).name, source_checksum=checksum,
                     source_crs=raster_crs.to_string(), srid=srid, valid_from=valid_from,
                     report={"crs": raster_crs.to_string(), "bounds": list(bounds)},
                     coverage_wkb=shapely.to_wkb(extent), raster_path=str(target))
    with db.autocommit_connection(engine) as conn:
        version_id, version = write_raster_version(conn, new, extent_wkb=shapely.to_wkb(extent))
    return LoadReport(layer_code=minor.code, version=version, version_id=version_id,
                      source=Path(path).name, checksum=checksum, features=0,
                      source_crs=raster_crs.to_string(), reprojected=False, repaired=0,
                      timings={"register": time.perf_counter() - started})
