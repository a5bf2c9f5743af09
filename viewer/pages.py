"""The web map page, built with folium (Leaflet): layer tree and legend, conflict review, site check.

One page, three views (``layers``, ``conflicts``, ``site``) that differ only in the tab opened
first. folium builds the Leaflet map and its basemap; :class:`ViewerApp` adds the side panel and
``viewer.js`` (layers, legend, popups), ``conflicts.js`` and ``site.js``; every layer is drawn from
``/tiles/{layer}/{z}/{x}/{y}.pbf``. Leaflet and Leaflet.VectorGrid are served from
``/viewer/static/vendor`` so the page needs no internet.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import sqlalchemy as sa
from branca.element import Figure, MacroElement
from jinja2 import Template

from layers import store
from layers.catalogue import Catalogue
from layers.settings import Settings
from spatial.conflicts.rules import RulesError, load_rules
from spatial.conflicts.terms import STATUSES
from spatial.site.request import transformer

log = logging.getLogger("blueprint.viewer")

VIEWS = ("layers", "conflicts", "site")
STATIC_URL = "/viewer/static"
STATIC_DIR = Path(__file__).with_name("static")
TEMPLATE_DIR = Path(__file__).with_name("templates")
BLUEPRINT_LAYER = "3105"
PLAN_MAJOR = "2"
DEFAULT_LAYERS = ("1101", "2301", "2103", "2202", BLUEPRINT_LAYER)
"""Layers switched on when the page opens (those that are loaded)."""
JINAN = (36.65, 117.0)  # where the map opens when nothing is loaded
BROWSER_TILE_FEATURES = 5000
"""A layer is drawn from the zoom at which a tile holds about this many features or fewer (a browser
draws that fluidly; below, the layer's tree entry says from which zoom it shows)."""

# Map colours: the viewer's own palette, not rules (the rules say which class a code is in).
UNIFIED_COLORS = {"construction": "#e8543f", "agricultural": "#f3d36b", "ecological": "#4daf4a",
                  "water": "#4a90d9", "other": "#bdbdbd"}
UNIFIED_NAMES = {"construction": "建设 Construction", "agricultural": "农业 Agricultural",
                 "ecological": "生态 Ecological", "water": "水域 Water", "other": "其他 Other"}
SEVERITY_COLORS = {"critical": "#b10026", "major": "#f03b20", "minor": "#feb24c"}

VENDOR_JS = [
    ("leaflet", f"{STATIC_URL}/vendor/leaflet/leaflet.js"),
    ("vectorgrid", f"{STATIC_URL}/vendor/vectorgrid/Leaflet.VectorGrid.bundled.min.js"),
]
VENDOR_CSS = [("leaflet_css", f"{STATIC_URL}/vendor/leaflet/leaflet.css")]


def _rules_data() -> tuple[dict, list[dict]]:
    """Harmonisation schemes (code → unified class) and conflict types from the conflict rules.

    The map colours land-use codes by their unified class; while the rules file cannot be read or
    is invalid, layers keep their catalogue fill colour (the map still opens; the log says why).
    """
    try:
        rules = load_rules()
    except RulesError as exc:
        log.warning("conflict rules unavailable for the map: %s", exc)
        return {}, []
    schemes = {name: dict(scheme.mapping) for name, scheme in rules.schemes.items()}
    types = [{"code": r.code, "name_zh": r.name_zh, "name_en": r.name_en, "severity": r.severity}
             for r in rules.rules]
    return schemes, types


def _bounds(extents: list[tuple[float, float, float, float]], srid: int) -> list[list[float]] | None:
    """[[south, west], [north, east]] around storage-CRS extents, or None."""
    if not extents:
        return None
    x0, y0 = min(e[0] for e in extents), min(e[1] for e in extents)
    x1, y1 = max(e[2] for e in extents), max(e[3] for e in extents)
    w, s, e, n = transformer(srid, 4326).transform_bounds(x0, y0, x1, y1)
    return [[s, w], [n, e]]


def layer_min_zoom(count: int, extent: tuple[float, float, float, float] | None, srid: int) -> int:
    """The lowest zoom at which a tile of this layer holds about BROWSER_TILE_FEATURES features or fewer.

    Assumes the features spread evenly over the extent (storage CRS, metres); 0 for small layers.

    Examples
    --------
    >>> layer_min_zoom(1_000_000, (470_000, 3_990_000, 570_000, 4_090_000), 4548)
    13
    >>> layer_min_zoom(300, (470_000, 3_990_000, 570_000, 4_090_000), 4548)
    0
    """
    if count <= BROWSER_TILE_FEATURES or not extent:
        return 0
    x0, y0, x1, y1 = extent
    area = max((x1 - x0) * (y1 - y0), 1.0)
    _, lat = transformer(srid, 4326).transform((x0 + x1) / 2, (y0 + y1) / 2)
    for zoom in range(0, 17):
        side = 40_075_016.686 * math.cos(math.radians(lat)) / 2**zoom  # ground metres across a tile
        if count * min(1.0, side * side / area) <= BROWSER_TILE_FEATURES:
            return zoom
    return 16


def viewer_config(conn: sa.Connection, settings: Settings, catalogue: Catalogue, *, view: str) -> dict:
    """Everything the page script needs, read now: catalogue, loaded versions, palettes, rules.

    Examples
    --------
    >>> config = viewer_config(conn, settings, load_catalogue(), view="layers")  # doctest: +SKIP
    >>> config["catalogue"][0]["code"]  # doctest: +SKIP
    '1'
    """
    current = store.current_versions(conn)
    srid = settings.storage.storage_srid
    versions = {code: {"id": v.id, "version": v.version, "features": v.feature_count,
                       "min_zoom": layer_min_zoom(v.feature_count, v.extent, srid)}
                for code, v in current.items() if catalogue.minors.get(code) and v.raster_path is None}
    schemes, types = _rules_data()
    hierarchy = catalogue.hierarchy()
    for major in hierarchy:
        for middle in major["middles"]:
            middle["minors"] = [
                {k: m[k] for k in ("code", "name_zh", "name_en", "geometry_type", "control_level", "style")}
                | {"attributes": [a["name"] for a in m["attributes"]]}
                for m in middle["minors"]
            ]
    extents = [v.extent for code, v in current.items() if code in versions and v.extent]
    return {
        "view": view if view in VIEWS else "layers",
        "catalogue": hierarchy,
        "versions": versions,
        "default_layers": [c for c in DEFAULT_LAYERS if c in versions],
        "blueprint_layer": BLUEPRINT_LAYER,
        "plan_major": PLAN_MAJOR,
        "bounds": _bounds(extents, srid),
        "center": list(JINAN),
        "schemes": schemes,
        "unified_colors": UNIFIED_COLORS,
        "unified_names": UNIFIED_NAMES,
        "severity_colors": SEVERITY_COLORS,
        "conflict_types": types,
        "statuses": list(STATUSES),
        "basemap": bool(settings.server.basemap_url),
        "max_site_vertices": settings.server.max_site_vertices,
        "max_upload_bytes": settings.server.max_request_bytes,
    }


class ViewerApp(MacroElement):
    """The side panel and the page script, attached to a folium map."""

    _template = Template("""
{% macro header(this, kwargs) %}
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{{ this.static }}/viewer.css"/>
    <script src="{{ this.static }}/viewer.js"></script>
    <script src="{{ this.static }}/conflicts.js"></script>
    <script src="{{ this.static }}/site.js"></script>
{% endmacro %}
{% macro html(this, kwargs) %}
{{ this.panel }}
{% endmacro %}
{% macro script(this, kwargs) %}
    OneBlueprint.start({{ this._parent.get_name() }}, {{ this.config_json }});
{% endmacro %}
""")

    def __init__(self, config: dict) -> None:
        super().__init__()
        self._name = "ViewerApp"
        self.static = STATIC_URL
        self.panel = (TEMPLATE_DIR / "panel.html").read_text(encoding="utf-8")
        # Inside <script>, "</" must not close the element.
        self.config_json = json.dumps(config, ensure_ascii=False).replace("</", "<\\/")


def build_page(config: dict, settings: Settings) -> str:
    """The HTML of the map page for a :func:`viewer_config`.

    Leaflet comes from this server (folium's CDN defaults are replaced); the basemap is
    ``settings.server.basemap_url`` or none when that is empty.
    """
    import folium

    figure = Figure(title="一张蓝图 One Blueprint")
    fmap = folium.Map(location=config["center"], zoom_start=10, tiles=None, control_scale=True,
                      max_zoom=22, zoom_control=True)
    fmap.default_js = VENDOR_JS
    fmap.default_css = VENDOR_CSS
    figure.add_child(fmap)
    basemap = settings.server.basemap_url
    if basemap:
        folium.TileLayer(basemap, attr=settings.server.basemap_attribution, name="basemap",
                         max_zoom=22, max_native_zoom=19).add_to(fmap)
    fmap.add_child(ViewerApp(config))
    return figure.render()
