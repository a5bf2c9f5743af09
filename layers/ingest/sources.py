"""Reading a plan file safely: format checks, zip hygiene, layer choice, checksum."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
from pyproj import CRS

from layers.errors import InvalidInput
from layers.ingest import wkb as wkb_

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".geoparquet", ".zip"}
ALLOWED_DRIVERS = {"GPKG", "ESRI Shapefile", "GeoJSON", "FlatGeobuf"}
RASTER_SUFFIXES = {".tif", ".tiff"}
GDAL_BATCH_ROWS = 65_536  # pyogrio's default Arrow batch
# A layer is read in one Arrow batch when its file is under this size per batch: a binary array's
# 32-bit offsets hold 2 GiB, and a file's size is about its geometries' WKB size or more.
ONE_BATCH_BYTES = 1 << 30
# URLs, UNC shares and GDAL's virtual file systems (/vsicurl, /vsis3, /vsizip, ...): never read as given.
NETWORK_PREFIXES = ("/vsi", "http:", "https:", "ftp:", "//", "\\\\")
# Files that make GDAL read other files or URLs: never accepted as a plan.
INDIRECT_MARKERS = (b"<OGRVRTDataSource", b"<VRTDataset", b"<GDAL_WMS", b"<WFS_GetCapabilities")


@dataclass(frozen=True)
class Source:
    """A checked plan file: where GDAL should read it and what it is."""

    path: Path
    gdal_path: str
    is_parquet: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _reject_indirect(head: bytes, name: str) -> None:
    stripped = head.lstrip()
    if any(stripped.startswith(marker) for marker in INDIRECT_MARKERS):
        raise InvalidInput(f"{name} is a GDAL virtual/remote dataset, not a plan file")


def _check_zip(path: Path) -> str:
    """Validate a zip's entries and return the GDAL path of the one dataset inside."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                pure = PurePosixPath(name.replace("\\", "/"))
                if pure.is_absolute() or ".." in pure.parts or ":" in pure.parts[0]:
                    raise InvalidInput(f"{path.name}: zip entry {name!r} escapes the archive folder")
                if pure.suffix.lower() in {".vrt", ".zip"}:
                    raise InvalidInput(f"{path.name}: zip entry {name!r} is not a plan file")
            datasets = [n for n in names if PurePosixPath(n).suffix.lower() in VECTOR_SUFFIXES]
            for name in datasets:
                with zf.open(name) as fh:
                    _reject_indirect(fh.read(256), f"{path.name}:{name}")
    except zipfile.BadZipFile:
        raise InvalidInput(f"{path.name} is not a readable zip file") from None
    if not datasets:
        raise InvalidInput(f"{path.name} holds no GeoPackage, Shapefile, GeoJSON or FlatGeobuf")
    shapefiles = [n for n in datasets if n.lower().endswith(".shp")]
    if len(datasets) > 1 and len(shapefiles) != 1:
        raise InvalidInput(f"{path.name} holds {len(datasets)} datasets; zip one plan per file")
    return f"/vsizip/{path}/{(shapefiles or datasets)[0]}"


def check_local_file(path_text: str | Path) -> Path:
    """The checks every plan file passes, vector or raster: a local, non-empty file that is not a
    GDAL virtual or remote dataset (a VRT would make GDAL read other files or URLs).

    Raises
    ------
    InvalidInput
        For network and GDAL virtual paths, missing or empty files and VRT-like content.

    Examples
    --------
    >>> check_local_file("https://example.com/plan.gpkg")
    Traceback (most recent call last):
    ...
    layers.errors.InvalidInput: https://example.com/plan.gpkg is a network path: copy the file to this machine first
    """
    text = str(path_text)
    if text.lower().startswith(NETWORK_PREFIXES) or "://" in text:
        raise InvalidInput(f"{text} is a network path: copy the file to this machine first")
    path = Path(text)
    if path.is_dir():
        raise InvalidInput(f"{text} is a folder: give the plan file in it")
    if not path.is_file():
        raise InvalidInput(f"{text}: no such file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty")
    with open(path, "rb") as fh:
        _reject_indirect(fh.read(256), path.name)
    return path


def open_source(path_text: str | Path) -> Source:
    """Check a user's vector file (see :func:`check_local_file`) and say how to read it.

    Raises
    ------
    InvalidInput
        For what :func:`check_local_file` refuses, unsupported formats and unsafe zips.
    """
    path = check_local_file(path_text)
    suffix = path.suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise InvalidInput(
            f"{path.name}: unsupported format {suffix or '(none)'}; use GeoPackage, Shapefile "
            "(or zipped), GeoJSON, FlatGeobuf or GeoParquet"
        )
    gdal_path = _check_zip(path) if suffix == ".zip" else str(path)
    return Source(path=path, gdal_path=gdal_path, is_parquet=suffix in {".parquet", ".geoparquet"})


def open_raster_source(path_text: str | Path) -> Path:
    """Check a user's raster file (see :func:`check_local_file`): a GeoTIFF or COG."""
    path = check_local_file(path_text)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise InvalidInput(f"{path.name}: raster layers take GeoTIFF or COG files")
    return path


@dataclass
class PlanFeatures:
    """What a plan holds, read but not yet checked.

    ``geometry`` is WKB (one Arrow array, as files hold it) or shapely geometries (from a frame);
    ``fids`` are the file's own feature ids where its format keeps them (a GeoPackage's primary
    key), else None.
    """

    attributes: pd.DataFrame
    geometry: pa.Array | np.ndarray
    crs: CRS | None
    fids: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: gpd.GeoDataFrame) -> PlanFeatures:
        return cls(attributes=pd.DataFrame(frame.drop(columns=frame.geometry.name)),
                   geometry=np.asarray(frame.geometry.values, dtype=object),
                   crs=CRS.from_user_input(frame.crs) if frame.crs is not None else None)

    def to_frame(self) -> gpd.GeoDataFrame:
        geometry = self.geometry if isinstance(self.geometry, np.ndarray) else wkb_.objects(self.geometry)
        return gpd.GeoDataFrame(self.attributes, geometry=geometry, crs=self.crs)


def read_features(source: Source, *, source_layer: str | None = None) -> PlanFeatures:
    """Read the chosen layer of a checked source: attributes, geometries as WKB, CRS as in the file."""
    if source.is_parquet:
        return _read_geoparquet(source.path)
    name = source.path.name
    try:
        layers = pyogrio.list_layers(source.gdal_path)
        info = pyogrio.read_info(source.gdal_path, layer=source_layer or 0)
    except Exception as exc:  # GDAL reports corrupt input through several exception types
        raise InvalidInput(f"{name} is not a readable vector file ({_first_line(exc)})") from None
    if info["driver"] not in ALLOWED_DRIVERS:
        raise InvalidInput(f"{name}: format {info['driver']} is not accepted")
    names = [str(row[0]) for row in layers]
    if source_layer is None and len(names) > 1:
        raise InvalidInput(f"{name} has {len(names)} layers ({', '.join(names)}): choose one with --source-layer")
    if source_layer is not None and source_layer not in names:
        raise InvalidInput(f"{name} has no layer {source_layer!r} (it has: {', '.join(names)})")
    fid_column = info.get("fid_column") or None  # only formats with real ids (GeoPackage) name one
    try:
        meta, table = pyogrio.read_arrow(source.gdal_path, layer=source_layer, return_fids=fid_column is not None,
                                         batch_size=_batch_rows(source, info["features"]))
        geometry_name = meta["geometry_name"] or "wkb_geometry"
        if geometry_name not in table.column_names:
            raise InvalidInput(f"{name} has no geometry column")
        fids = table.column(fid_column).to_numpy() if fid_column else None
        attributes = _to_pandas(table.drop_columns([c for c in (geometry_name, fid_column) if c]))
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(f"{name} could not be read ({_first_line(exc)})") from None
    crs = CRS.from_user_input(meta["crs"]) if meta["crs"] else None
    return PlanFeatures(attributes=attributes, geometry=wkb_.as_wkb_array(table.column(geometry_name)),
                        crs=crs, fids=fids)


def _batch_rows(source: Source, features: int) -> int:
    """Rows per Arrow batch: the whole layer where it fits in one, since batches are joined into one
    array afterwards, a second copy of every geometry. For bench/ingest.py's 1M polygons read from
    GeoPackage, read and join took 1.30 s and 1.0 GB at most instead of 1.70 s and 1.8 GB (ad hoc)."""
    if features <= 0 or source.gdal_path != str(source.path):  # count unknown, or zipped (size unknown)
        return GDAL_BATCH_ROWS
    bytes_per_row = max(1, source.path.stat().st_size // features)
    return max(GDAL_BATCH_ROWS, min(features, ONE_BATCH_BYTES // bytes_per_row))


def _read_geoparquet(path: Path) -> PlanFeatures:
    """A GeoParquet file; its WKB geometry column read as is (others through geopandas).

    Read with ``ParquetFile`` over a memory map rather than ``pq.read_table``, whose dataset
    scanner copies the compressed column chunks into fresh memory and takes ~1 s to start in a new
    process. Measured ad hoc on the 2-core VM: 1M polygons of bench/ingest.py read in 1.4 s instead
    of 8.7 s (new processes); 100k, loaded again and again in one process, in 0.16 s instead of
    0.36–0.43 s (medians of 7).
    """
    try:
        with pq.ParquetFile(path, memory_map=True) as parquet:
            metadata = parquet.schema_arrow.metadata or {}
            if b"geo" not in metadata:
                raise InvalidInput(f"{path.name} is Parquet without GeoParquet's 'geo' metadata")
            table = parquet.read()
        geo = json.loads(metadata[b"geo"])
        column = geo["primary_column"]
        spec = geo["columns"][column]
        if spec.get("encoding", "WKB").upper() != "WKB":  # GeoArrow-native encodings
            return PlanFeatures.from_frame(gpd.read_parquet(path))
        # No "crs" means OGC:CRS84 (GeoParquet spec); null means unknown.
        crs_spec = spec.get("crs", "OGC:CRS84")
        crs = None if crs_spec is None else (
            CRS.from_json_dict(crs_spec) if isinstance(crs_spec, dict) else CRS.from_user_input(crs_spec))
    except InvalidInput:
        raise
    except Exception as exc:  # pyarrow and pyproj raise many types for corrupt files
        raise InvalidInput(f"{path.name} is not a readable GeoParquet file ({_first_line(exc)})") from None
    covering = [c for c in {path[0] for path in spec.get("covering", {}).get("bbox", {}).values()}
                if c in table.column_names and c != column]  # GeoParquet 1.1's per-row bounding boxes
    attributes = _to_pandas(table.drop_columns([column, *covering]))
    return PlanFeatures(attributes=attributes, geometry=wkb_.as_wkb_array(table.column(column)), crs=crs)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    try:
        return table.to_pandas()
    except UnicodeDecodeError:
        raise InvalidInput("the file's text is not UTF-8 (for a Shapefile, add a .cpg naming its encoding)") from None


def read_source(source: Source, *, source_layer: str | None = None) -> gpd.GeoDataFrame:
    """Read the chosen layer of a checked source into a GeoDataFrame (CRS as in the file)."""
    return read_features(source, source_layer=source_layer).to_frame()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
