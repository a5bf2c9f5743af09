"""Reading a site-check request: JSON body → a valid polygon in the storage CRS, or a precise 422.

Everything a user can get wrong is checked here, before any database work, and reported with the
reason and, for geometry, where: a JSON pointer into the request (``pointer``) and, for an
invalid polygon, the offending point in the request's own CRS (``location``).

Invalid polygons (self-intersections, holes outside their shell, …) are **rejected, not repaired**:
``make_valid`` turns a bow-tie into two triangles or drops a spike, which is rarely the land the
sponsor meant, and an approval answer about a guessed boundary is worse than a clear error.
The response field ``repaired`` is therefore always false.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from layers.errors import InvalidInput

MAX_BUFFER_M = 2_000.0
"""Largest ``buffer_m`` accepted (larger margins are a different question: use a bigger site)."""

REQUEST_FIELDS = {"geometry", "crs", "as_of", "buffer_m"}
GEOGRAPHIC = {4326: "EPSG:4326", 4490: "EPSG:4490"}
_CRS_ALIASES = {
    "crs84": 4326, "ogc:crs84": 4326, "urn:ogc:def:crs:ogc:1.3:crs84": 4326,
    "urn:ogc:def:crs:ogc::crs84": 4326, "http://www.opengis.net/def/crs/ogc/1.3/crs84": 4326,
}


@dataclass(frozen=True)
class SiteRequest:
    """A checked site-check request.

    ``geometry`` is the site in the storage CRS (Polygon or MultiPolygon, valid, positive area);
    ``request`` is the input as given, kept so a stored check can be re-read and cited.
    """

    geometry: shapely.Geometry
    crs: str
    srid: int
    as_of: dt.date | None
    buffer_m: float
    vertices: int
    request: dict = field(repr=False)

    @property
    def area_m2(self) -> float:
        return float(self.geometry.area)


def parse_json(body: bytes) -> Any:
    """Parse a request body strictly: NaN and Infinity are not JSON (RFC 8259) and are refused."""
    def reject_constant(name: str) -> float:
        raise InvalidInput(f"{name} is not a number JSON allows: give finite coordinates")

    try:
        return json.loads(body, parse_constant=reject_constant)
    except InvalidInput:
        raise
    except RecursionError:
        raise InvalidInput("the request nests arrays too deeply to be a polygon") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the request body is not valid JSON ({exc})".splitlines()[0]) from None


def parse_request(data: Any, *, storage_srid: int, max_vertices: int) -> SiteRequest:
    """Check a decoded request and return the site in the storage CRS.

    Parameters
    ----------
    data : the decoded JSON body: ``{"geometry": <GeoJSON Polygon|MultiPolygon>, "crs": "EPSG:4326",
        "as_of": "YYYY-MM-DD", "buffer_m": 0}``; only ``geometry`` is required. A GeoJSON Feature
        is accepted in place of a bare geometry.
    storage_srid : the deployment's storage CRS (EPSG code).
    max_vertices : most vertices accepted.

    Raises
    ------
    InvalidInput
        With a one-line reason; ``detail`` has ``pointer`` (and ``location`` for invalid rings).

    Examples
    --------
    >>> body = {"geometry": {"type": "Polygon", "coordinates": [[[117.0, 36.6], [117.001, 36.6],
    ...         [117.001, 36.601], [117.0, 36.6]]]}}
    >>> req = parse_request(body, storage_srid=4548, max_vertices=10_000)
    >>> req.crs, round(req.area_m2)
    ('EPSG:4326', 4965)
    """
    if not isinstance(data, dict):
        raise InvalidInput("the request must be a JSON object with a 'geometry' member", detail={"pointer": ""})
    unknown = sorted(set(data) - REQUEST_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown request member {unknown[0]!r}; expected geometry, crs, as_of, buffer_m",
                           detail={"pointer": f"/{unknown[0]}"})
    if "geometry" not in data:
        raise InvalidInput("the request has no 'geometry'", detail={"pointer": "/geometry"})
    epsg, crs_name = parse_crs(data.get("crs"), storage_srid=storage_srid)
    geometry, vertices = _geometry(data["geometry"], max_vertices=max_vertices)
    _check_range(geometry, epsg=epsg, storage_srid=storage_srid)
    stored = _to_storage(geometry, epsg=epsg, storage_srid=storage_srid)
    _check_valid(stored, epsg=epsg, storage_srid=storage_srid)
    return SiteRequest(geometry=stored, crs=crs_name, srid=storage_srid, as_of=parse_date(data.get("as_of")),
                       buffer_m=parse_buffer(data.get("buffer_m")), vertices=vertices, request=data)


def parse_crs(value: Any, *, storage_srid: int) -> tuple[int, str]:
    """The EPSG code and canonical name of an accepted CRS: EPSG:4326 (default), EPSG:4490, storage."""
    if value is None:
        return 4326, "EPSG:4326"
    if isinstance(value, dict):  # the 2008 GeoJSON form {"type": "name", "properties": {"name": ...}}
        value = (value.get("properties") or {}).get("name")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("crs must be a string such as 'EPSG:4326'", detail={"pointer": "/crs"})
    text = value.strip().lower()
    epsg = _CRS_ALIASES.get(text)
    if epsg is None:
        for prefix in ("epsg:", "urn:ogc:def:crs:epsg::", "urn:ogc:def:crs:epsg:", "http://www.opengis.net/def/crs/epsg/0/"):
            if text.startswith(prefix) and text[len(prefix):].isdigit():
                epsg = int(text[len(prefix):])
                break
    accepted = f"use EPSG:4326 (the default), EPSG:4490 or EPSG:{storage_srid}"
    if epsg is None:
        raise InvalidInput(f"unknown CRS {value!r}: {accepted}", detail={"pointer": "/crs"})
    if epsg not in GEOGRAPHIC and epsg != storage_srid:
        raise InvalidInput(f"CRS EPSG:{epsg} is not accepted for sites: {accepted}", detail={"pointer": "/crs"})
    return epsg, f"EPSG:{epsg}"


def parse_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value) if len(value) == 10 else _bad_date(value)
        except ValueError:
            _bad_date(value)
    return _bad_date(value)


def _bad_date(value: Any) -> dt.date:
    raise InvalidInput(f"as_of must be a date YYYY-MM-DD, not {value!r}", detail={"pointer": "/as_of"})


def parse_buffer(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.inf
    if math.isnan(number):
        raise InvalidInput("buffer_m must be a number of metres", detail={"pointer": "/buffer_m"})
    if not 0 <= number <= MAX_BUFFER_M:
        raise InvalidInput(f"buffer_m must lie between 0 and {MAX_BUFFER_M:,.0f} m, not {number:g}",
                           detail={"pointer": "/buffer_m"})
    return number


# -- geometry --------------------------------------------------------------------------------------

def _geometry(value: Any, *, max_vertices: int) -> tuple[shapely.Geometry, int]:
    pointer = "/geometry"
    if isinstance(value, dict) and value.get("type") == "Feature":
        value, pointer = value.get("geometry"), "/geometry/geometry"
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise InvalidInput("geometry must be a GeoJSON Polygon or MultiPolygon object", detail={"pointer": pointer})
    kind = value["type"]
    if kind not in ("Polygon", "MultiPolygon"):
        raise InvalidInput(f"a site must be a Polygon or MultiPolygon, not a {kind}",
                           detail={"pointer": f"{pointer}/type"})
    coords = value.get("coordinates")
    if not isinstance(coords, list | tuple):
        raise InvalidInput("geometry has no coordinates array", detail={"pointer": f"{pointer}/coordinates"})
    polygons = [coords] if kind == "Polygon" else coords
    if not polygons or all(isinstance(p, list | tuple) and not p for p in polygons):
        raise InvalidInput("the geometry is empty", detail={"pointer": f"{pointer}/coordinates"})
    vertices = _count_positions(polygons)
    if vertices > max_vertices:
        raise InvalidInput(f"the site has {vertices:,} vertices; at most {max_vertices:,} are accepted",
                           detail={"pointer": f"{pointer}/coordinates", "vertices": vertices})
    parts = []
    for i, rings in enumerate(polygons):
        where = f"{pointer}/coordinates" + (f"/{i}" if kind == "MultiPolygon" else "")
        if not isinstance(rings, list | tuple) or not rings:
            raise InvalidInput("a polygon has no rings (empty geometry)", detail={"pointer": where})
        arrays = [_ring(ring, f"{where}/{j}") for j, ring in enumerate(rings)]
        parts.append(shapely.Polygon(arrays[0], arrays[1:]))
    geometry = parts[0] if kind == "Polygon" else shapely.MultiPolygon(parts)
    return geometry, vertices


def _count_positions(polygons: list) -> int:
    total = 0
    for rings in polygons:
        if isinstance(rings, list | tuple):
            for ring in rings:
                total += len(ring) if isinstance(ring, list | tuple) else 0
    return total


def _ring(ring: Any, where: str) -> np.ndarray:
    if not isinstance(ring, list | tuple):
        raise InvalidInput("a ring must be an array of positions", detail={"pointer": where})
    bad = next((k for k, p in enumerate(ring) if not _is_position(p)), None)
    if bad is not None:
        raise InvalidInput("a position must be [x, y] (or [x, y, z]) numbers", detail={"pointer": f"{where}/{bad}"})
    # An integer too large for a float becomes infinity, refused just below.
    xy = np.array([[_float(c) for c in p[:2]] for p in ring], dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        bad = int(np.flatnonzero(~np.isfinite(xy).all(axis=1))[0])
        raise InvalidInput("coordinates must be finite numbers (no NaN or Infinity)",
                           detail={"pointer": f"{where}/{bad}"})
    if len(xy) < 4:
        raise InvalidInput(f"a ring needs at least 4 positions (first = last), this one has {len(xy)}",
                           detail={"pointer": where})
    if not (xy[0] == xy[-1]).all():
        raise InvalidInput("the ring is not closed: its last position must repeat the first",
                           detail={"pointer": f"{where}/{len(xy) - 1}", "location": xy[0].tolist()})
    return xy


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _is_position(p: Any) -> bool:
    return isinstance(p, list | tuple) and 2 <= len(p) <= 3 and all(_is_number(c) for c in p)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_range(geometry: shapely.Geometry, *, epsg: int, storage_srid: int) -> None:
    """Refuse coordinates outside the CRS's range or the storage CRS's area, naming a likely swap."""
    xy = shapely.get_coordinates(geometry)
    west, south, east, north = _area_of_use(storage_srid)
    if epsg in GEOGRAPHIC:
        lon, lat = xy[:, 0], xy[:, 1]
        in_area = _inside(lon, lat, (west, south, east, north))
        if in_area.all():
            return
        if _inside(lat, lon, (west, south, east, north)).all():
            raise InvalidInput("the coordinates appear to be in latitude, longitude order; GeoJSON positions "
                               "are [longitude, latitude] (RFC 7946)", detail={"pointer": "/geometry/coordinates"})
        bad = xy[~in_area][0].tolist()
        if (np.abs(lon) > 180).any() or (np.abs(lat) > 90).any():
            reason = "longitude must lie in [-180, 180] and latitude in [-90, 90]"
        else:
            reason = (f"the storage CRS EPSG:{storage_srid} covers longitudes {west}–{east} and "
                      f"latitudes {south}–{north}")
        raise InvalidInput(f"coordinates out of range: {reason}",
                           detail={"pointer": "/geometry/coordinates", "location": bad})
    bounds = _projected_bounds(storage_srid)
    in_area = _inside(xy[:, 0], xy[:, 1], bounds)
    if in_area.all():
        return
    if (np.abs(xy[:, 0]) <= 180).all() and (np.abs(xy[:, 1]) <= 90).all():
        message = f"the coordinates look like degrees, not EPSG:{storage_srid} metres: set crs to EPSG:4326"
    elif _inside(xy[:, 1], xy[:, 0], bounds).all():
        message = "the coordinates appear to be in northing, easting order; give [easting, northing]"
    else:
        message = f"coordinates out of range: outside the area of EPSG:{storage_srid}"
    raise InvalidInput(message, detail={"pointer": "/geometry/coordinates", "location": xy[~in_area][0].tolist()})


def _inside(x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    return (x >= bounds[0]) & (x <= bounds[2]) & (y >= bounds[1]) & (y <= bounds[3])


_local = threading.local()


def transformer(src: int, dst: int) -> Transformer:
    """A cached, per-thread pyproj transformer (x = easting/longitude)."""
    cache = _local.__dict__.setdefault("transformers", {})
    key = (src, dst)
    if key not in cache:
        cache[key] = Transformer.from_crs(src, dst, always_xy=True)
    return cache[key]


def _area_of_use(srid: int) -> tuple[float, float, float, float]:
    cache = _local.__dict__.setdefault("areas", {})
    if srid not in cache:
        area = CRS.from_epsg(srid).area_of_use
        cache[srid] = (area.west, area.south, area.east, area.north) if area else (-180.0, -90.0, 180.0, 90.0)
    return cache[srid]


def _projected_bounds(srid: int) -> tuple[float, float, float, float]:
    cache = _local.__dict__.setdefault("projected", {})
    if srid not in cache:
        # A margin of half a degree: parcels on the zone edge are still in range.
        west, south, east, north = _area_of_use(srid)
        cache[srid] = transformer(4326, srid).transform_bounds(west - 0.5, south - 0.5, east + 0.5, north + 0.5)
    return cache[srid]


def _to_storage(geometry: shapely.Geometry, *, epsg: int, storage_srid: int) -> shapely.Geometry:
    if epsg == storage_srid:
        return geometry
    tr = transformer(epsg, storage_srid)
    return shapely.transform(geometry, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _check_valid(geometry: shapely.Geometry, *, epsg: int, storage_srid: int) -> None:
    """Reject an invalid or zero-area polygon, saying why and where (in the request's CRS)."""
    if shapely.is_valid(geometry):
        if geometry.area <= 0:
            raise InvalidInput("the site has no area", detail={"pointer": "/geometry/coordinates"})
        return
    reason = shapely.is_valid_reason(geometry)
    text, _, rest = reason.partition("[")
    detail: dict[str, Any] = {"pointer": "/geometry/coordinates", "reason": text}
    try:
        x, y = (float(v) for v in rest.rstrip("]").split()[:2])
        if epsg != storage_srid:
            x, y = transformer(storage_srid, epsg).transform(x, y)
        detail["location"] = [round(x, 9), round(y, 9)]
    except ValueError:
        pass
    where = f" at {detail['location']}" if "location" in detail else ""
    raise InvalidInput(f"invalid polygon: {text.lower()}{where}; fix the boundary (sites are not repaired)",
                       detail=detail)
