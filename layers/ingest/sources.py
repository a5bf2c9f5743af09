"""Reading a plan file safely: format checks, zip hygiene, layer choice, checksum."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import geopandas as gpd
import pyogrio

from layers.errors import InvalidInput

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".parquet", ".geoparquet", ".zip"}
ALLOWED_DRIVERS = {"GPKG", "ESRI Shapefile", "GeoJSON", "FlatGeobuf"}
RASTER_SUFFIXES = {".tif", ".tiff"}
# URLs, UNC shares and GDAL's virtual file systems (/vsicurl, /vsis3, /vsizip, ...): never read as given.
NETWORK_PREFIXES = ("/vsi", "http:", "https:", "ftp:", "//", "\\\\")
# Files that make GDAL read other files or URLs: never accepted as a plan.
INDIRECT_MARKERS = (b"<OGRVRTDataSource", b"<VRTDataset", b"<GDAL_WMS", b"<WFS_GetCapabilities")


@dataclass(frozen=True)
class Source:
    """A checked plan file: where GDAL should read it and what it is."""

    path: Path
    gdal_path: str
    checksum: str
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
    return Source(path=path, gdal_path=gdal_path, checksum=file_sha256(path),
                  is_parquet=suffix in {".parquet", ".geoparquet"})


def open_raster_source(path_text: str | Path) -> Path:
    """Check a user's raster file (see :func:`check_local_file`): a GeoTIFF or COG."""
    path = check_local_file(path_text)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise InvalidInput(f"{path.name}: raster layers take GeoTIFF or COG files")
    return path


def read_source(source: Source, *, source_layer: str | None = None) -> gpd.GeoDataFrame:
    """Read the chosen layer of a checked source into a GeoDataFrame (CRS as in the file)."""
    name = source.path.name
    if source.is_parquet:
        try:
            return gpd.read_parquet(source.path)
        except Exception as exc:  # pyarrow raises many types for corrupt files
            raise InvalidInput(f"{name} is not a readable GeoParquet file ({_first_line(exc)})") from None
    try:
        layers = pyogrio.list_layers(source.gdal_path)
        info_driver = pyogrio.read_info(source.gdal_path, layer=source_layer or 0)["driver"]
    except Exception as exc:  # GDAL reports corrupt input through several exception types
        raise InvalidInput(f"{name} is not a readable vector file ({_first_line(exc)})") from None
    if info_driver not in ALLOWED_DRIVERS:
        raise InvalidInput(f"{name}: format {info_driver} is not accepted")
    names = [str(row[0]) for row in layers]
    if source_layer is None and len(names) > 1:
        raise InvalidInput(f"{name} has {len(names)} layers ({', '.join(names)}): choose one with --source-layer")
    if source_layer is not None and source_layer not in names:
        raise InvalidInput(f"{name} has no layer {source_layer!r} (it has: {', '.join(names)})")
    try:
        return pyogrio.read_dataframe(source.gdal_path, layer=source_layer, use_arrow=True)
    except Exception as exc:
        raise InvalidInput(f"{name} could not be read ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
