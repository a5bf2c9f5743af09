"""The page builder: configuration and per-layer minimum zoom."""

from __future__ import annotations

import math

import pytest
from pyproj import Geod, Transformer

from spatial.conflicts.rules import RulesError
from viewer import pages
from viewer.pages import BROWSER_TILE_FEATURES, layer_min_zoom

SQUARE = (470_000.0, 3_990_000.0, 570_000.0, 4_090_000.0)  # 100 km × 100 km near Jinan, EPSG:4548


def features_per_tile(count: int, extent, zoom: int) -> float:
    """Independent estimate: the ground area of a Web Mercator tile at the extent's centre (pyproj.Geod)."""
    lon, lat = Transformer.from_crs(4548, 4326, always_xy=True).transform(
        (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2)
    n = 2 ** zoom
    west = math.floor((lon + 180) / 360 * n) * 360 / n - 180
    y = math.floor((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    north = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    south = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 1) / n))))
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(
        [west, west + 360 / n, west + 360 / n, west], [south, south, north, north])
    extent_area = (extent[2] - extent[0]) * (extent[3] - extent[1])
    return count * min(1.0, abs(area) / extent_area)


@pytest.mark.parametrize("count", [6_000, 50_000, 1_000_000, 5_000_000])
def test_min_zoom_is_where_a_tile_fits_the_browser_budget(count):
    zoom = layer_min_zoom(count, SQUARE, 4548)
    assert 0 < zoom <= 16
    assert features_per_tile(count, SQUARE, zoom) <= BROWSER_TILE_FEATURES * 1.05
    assert features_per_tile(count, SQUARE, zoom - 1) > BROWSER_TILE_FEATURES * 0.95


def test_small_or_unknown_layers_show_at_every_zoom():
    assert layer_min_zoom(BROWSER_TILE_FEATURES, SQUARE, 4548) == 0
    assert layer_min_zoom(10_000_000, None, 4548) == 0
    assert layer_min_zoom(1_000_000, SQUARE, 4548) < layer_min_zoom(100_000_000, SQUARE, 4548)


def test_unreadable_rules_leave_the_map_uncoloured_but_bugs_surface(monkeypatch, caplog):
    schemes, types = pages._rules_data()
    assert "gb50137" in schemes and any(t["code"] == "CT03" for t in types)

    def invalid():
        raise RulesError("rule CT03: missing severity")

    monkeypatch.setattr(pages, "load_rules", invalid)
    assert pages._rules_data() == ({}, [])
    assert "rule CT03: missing severity" in caplog.text

    def broken():
        raise TypeError("a bug, not a rules problem")

    monkeypatch.setattr(pages, "load_rules", broken)
    with pytest.raises(TypeError):
        pages._rules_data()
