"""Query parameters shared by several routers, parsed into values or refused with a clear message."""

from __future__ import annotations

import math

from fastapi import Request
from fastapi.routing import APIRoute

from layers.errors import InvalidInput


def known_query_parameters(request: Request) -> None:
    """Refuse a query parameter the route does not take (``create_app`` adds it to every API route).

    FastAPI ignores unknown ones, so a mistyped ``as_of`` or ``version`` would silently answer
    for the current version.
    """
    known = _query_names(request.scope["route"])
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInput(f"unknown query parameter {', '.join(map(repr, unknown))}; "
                           f"this route takes {', '.join(sorted(known)) or 'none'}")


def _query_names(route: APIRoute) -> frozenset[str]:
    names, pending = set(), [route.dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``minlon,minlat,maxlon,maxlat`` (EPSG:4326) as four finite numbers with min < max, in range.

    Raises :class:`InvalidInput` (422) otherwise.

    Examples
    --------
    >>> parse_bbox("116.9,36.5,117.1,36.7")
    (116.9, 36.5, 117.1, 36.7)
    """
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidInput("bbox must be four numbers: minlon,minlat,maxlon,maxlat (EPSG:4326)")
    x0, y0, x1, y1 = values
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise InvalidInput("bbox must be minlon,minlat,maxlon,maxlat in degrees with min < max")
    return x0, y0, x1, y1
