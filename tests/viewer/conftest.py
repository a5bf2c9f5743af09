"""Fixtures for the web map: a small city loaded through load_frame, the real app on a loopback port,
and headless Chromium (Debian's, through its executable path).

The viewer tests use their own database (``blueprint_test_viewer``) so that tests emptying the
shared test database cannot pull the layers from under a running browser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from layers import db
from layers.catalogue import load_catalogue
from layers.embedded import free_port
from layers.ingest import load_frame
from layers.settings import Settings
from spatial.conflicts.run import run_conflicts
from tests.databases import database_name

VIEWER_DATABASE = database_name("viewer")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
X0, Y0 = 500_000.0, 4_000_000.0  # EPSG:4548, near Jinan


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


@dataclass
class City:
    """The frames loaded (EPSG:4548) and what the tests know about them."""

    frames: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    site: shapely.Polygon | None = None  # a planted site inside red line fid 1 (EPSG:4548)


def city_frames() -> dict[str, gpd.GeoDataFrame]:
    """A tiny city: two districts, red lines (one with a hole), land use, roads, facilities, blueprint."""
    crs = "EPSG:4548"
    hole = shapely.Polygon(box(9_000, 0, 11_000, 2_000).exterior.coords,
                           [box(9_500, 500, 10_500, 1_500).exterior.coords[::-1]])
    rng = np.random.default_rng(7)
    angles = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    radius = 400 + rng.uniform(0, 150, 30)
    star = shapely.Polygon(np.column_stack([X0 - 3_000 + radius * np.cos(angles),
                                            Y0 + 3_000 + radius * np.sin(angles)]))
    return {
        "1101": gpd.GeoDataFrame({"fid": [1, 2], "district_code": ["370102", "370103"],
                                  "district_name": ["历下区", "市中区"]},
                                 geometry=[box(-5_000, -5_000, 5_000, 5_000), box(5_000, -5_000, 15_000, 5_000)],
                                 crs=crs),
        "2301": gpd.GeoDataFrame({"fid": [1, 2, 3], "redline_type": ["biodiversity", "karst", "water_conservation"],
                                  "name": ["泉城红线", "南山红线", "环形红线"]},
                                 geometry=[box(-1_000, 0, 0, 1_000), star, hole], crs=crs),
        "2201": gpd.GeoDataFrame({"fid": [1, 2, 3], "ydlb": ["R2", "E2", "G1"]},
                                 geometry=[box(-500, 200, 500, 800), box(1_000, -3_000, 3_000, -1_000),
                                           box(-4_000, -4_000, -2_000, -2_000)], crs=crs),
        "1104": gpd.GeoDataFrame({"fid": [1, 2], "road_class": ["arterial", "branch"], "name": ["经十路", None]},
                                 geometry=[shapely.LineString([(X0 - 4_500, Y0 - 1_500), (X0 + 14_500, Y0 - 1_500)]),
                                           shapely.LineString([(X0 + 2_000, Y0 - 4_500), (X0 + 2_000, Y0 + 4_500)])],
                                 crs=crs),
        "4103": gpd.GeoDataFrame({"fid": [1, 2], "facility_type": ["school", "hospital"], "name": ["一中", "省立医院"]},
                                 geometry=[shapely.Point(X0 + 1_500, Y0 - 500), shapely.Point(X0 + 6_000, Y0 + 2_500)],
                                 crs=crs),
        "3105": gpd.GeoDataFrame({"fid": [1, 2, 3], "unified_class": ["ecological", "construction", "agricultural"],
                                  "control_level": ["prohibited", "allowed", "none"],
                                  "source_layer": ["2301", "2201", "2201"], "source_version": [1, 1, 1],
                                  "source_fid": [1, 1, 2]},
                                 geometry=[box(-1_000, 0, 0, 1_000), box(0, 200, 500, 800),
                                           box(1_000, -3_000, 3_000, -1_000)],
                                 crs=crs),
    }


def with_server_settings(settings: Settings, **changes) -> Settings:
    """``settings`` with some server settings changed."""
    return settings.model_copy(update={"server": settings.server.model_copy(update=changes)})


@pytest.fixture(scope="session")
def viewer_settings() -> Settings:
    return with_server_settings(Settings().on_database(VIEWER_DATABASE), basemap_url=None)


@pytest.fixture(scope="session")
def city(viewer_settings: Settings) -> Iterator[City]:
    """The test city loaded into a fresh database (and a conflict run if the conflict service exists)."""
    engine = db.fresh_database(viewer_settings)
    catalogue = load_catalogue()
    loaded = City(site=box(-800, 300, -600, 500))
    try:
        for code, frame in city_frames().items():
            report = load_frame(engine, viewer_settings, frame, minor=catalogue.minor(code),
                                source_name=f"test-{code}.parquet", checksum=f"test-{code}")
            loaded.frames[code] = frame
            loaded.versions[code] = report.version_id
        run_conflicts(engine, viewer_settings)
    finally:
        engine.dispose()
    yield loaded


@dataclass
class Server:
    url: str
    settings: Settings
    app: FastAPI


def run_server(settings: Settings) -> Iterator[Server]:
    """The real application under uvicorn in a background thread, stopped afterwards."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", settings, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def server(city: City, viewer_settings: Settings) -> Iterator[Server]:  # noqa: ARG001 - data first
    yield from run_server(viewer_settings)


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (its own browser download cannot work here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Page:
    """A page with every console error and page error collected."""

    page: object
    errors: list[str]

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda msg: errors.append(f"{msg.text} @ {msg.location.get('url', '')}")
           if msg.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    yield Page(tab, errors)
    context.close()
