"""Small geometry builders: smooth meandering lines, wobbly ellipses, rotated rectangles."""

from __future__ import annotations

import numpy as np
import shapely

from layers.demo.sources import project


def catmull_rom(points: np.ndarray, spacing: float) -> np.ndarray:
    """A smooth curve through ``points`` (n x 2, metres) sampled every ~``spacing`` metres."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = [points[:1]]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        n = max(int(np.hypot(*(p2 - p1)) / spacing), 1)
        t = (np.arange(1, n + 1) / n)[:, None]
        out.append(
            0.5
            * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
    return np.vstack(out)


def noise_1d(rng: np.random.Generator, n: int, step: float, wavelength: float) -> np.ndarray:
    """Smooth 1-D noise (unit-ish amplitude) at ``n`` samples ``step`` apart."""
    f = max(wavelength / step, 1.0)
    lattice = rng.standard_normal(int(n / f) + 4)
    pos = np.arange(n) / f + 1.0
    i = np.floor(pos).astype(int)
    t = pos - i
    w = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    return sum(wk * lattice[np.clip(i + k - 1, 0, len(lattice) - 1)] for k, wk in enumerate(w))


def meander(
    lonlat: tuple, rng: np.random.Generator, amplitude: float, spacing: float = 40.0, wavelength: float = 3_000.0
) -> shapely.LineString:
    """A smooth polyline through lon/lat waypoints, displaced sideways by smooth noise (metres)."""
    xy = np.column_stack(project(*np.asarray(lonlat, dtype=float).T))
    curve = catmull_rom(xy, spacing)
    if amplitude > 0:
        d = np.gradient(curve, axis=0)
        normal = np.column_stack([-d[:, 1], d[:, 0]]) / np.hypot(d[:, 0], d[:, 1])[:, None]
        offset = amplitude * (
            noise_1d(rng, len(curve), spacing, wavelength) + 0.35 * noise_1d(rng, len(curve), spacing, wavelength / 4)
        )
        offset[[0, -1]] = 0.0
        curve = curve + normal * offset[:, None]
    return shapely.LineString(curve)


def wobbly_ellipse(
    lon: float,
    lat: float,
    a_km: float,
    b_km: float,
    rotation: float,
    rng: np.random.Generator,
    wobble: float = 0.12,
    n: int = 96,
) -> shapely.Polygon:
    """An ellipse with a smoothly wobbling radius, centred on (lon, lat)."""
    cx, cy = project(lon, lat)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.arange(1, 6)
    phases = rng.uniform(0, 2 * np.pi, 5)
    amps = wobble * rng.uniform(0.3, 1.0, 5) / k
    r = 1 + (amps[:, None] * np.sin(k[:, None] * t[None, :] + phases[:, None])).sum(axis=0)
    x, y = a_km * 1000 * r * np.cos(t), b_km * 1000 * r * np.sin(t)
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    return shapely.Polygon(np.column_stack([cx + c * x - s * y, cy + s * x + c * y]))


def rotated_rect(
    cx: float, cy: float, length: float, width: float, angle: float, u0: float = -0.5, u1: float = 0.5
) -> shapely.Polygon:
    """The part ``u0..u1`` (fractions along the length) of a ``length`` x ``width`` rectangle
    centred on (cx, cy) and rotated ``angle`` degrees anticlockwise. Pieces of one rectangle share
    their dividing vertices exactly, so they tile it."""
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    u = np.array([u0, u1, u1, u0]) * length
    v = np.array([-0.5, -0.5, 0.5, 0.5]) * width
    return shapely.Polygon(np.column_stack([np.round(cx + c * u - s * v, 3), np.round(cy + s * u + c * v, 3)]))
