"""Issue 6's acceptance on the demo city, in Chromium: planted sites show their known answers and
the conflict page lists the planted conflicts (expectations from the generator's manifest)."""

from __future__ import annotations

import json

import httpx
import pytest

from spatial.conflicts.run import run_conflicts
from tests.viewer.conftest import run_server
from tests.viewer.test_browser import hit_codes, open_page, wait_for_report

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo_server(demo_city):
    run_conflicts(demo_city.engine, demo_city.settings)  # a rerun keeps the register's statuses
    # No basemap: this machine has no internet, and failed basemap tiles are console errors.
    settings = demo_city.settings.model_copy(
        update={"server": demo_city.settings.server.model_copy(update={"basemap_url": ""})})
    yield from run_server(settings)


def upload_site(page, server, demo_city, name: str, tmp_path) -> str:
    path = tmp_path / f"{name}.geojson"
    geometry = demo_city.manifest["sites"][name]["geojson"]
    feature = {"type": "Feature", "properties": {"site": name}, "geometry": geometry}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    open_page(page, server.url + "/site")
    with page.page.expect_response(lambda r: r.url.endswith("/api/v1/sites/check")):
        page.page.set_input_files("#bp-upload", str(path))
    wait_for_report(page)
    return page.page.locator("#bp-verdict").inner_text()


def test_planted_red_line_site_shows_the_red_line(page, demo_server, demo_city, tmp_path):
    verdict = upload_site(page, demo_server, demo_city, "redline", tmp_path)
    assert "2301" in hit_codes(page)
    assert "prohibited" in verdict
    page.shot("demo-site-redline")
    assert page.errors == []


def test_planted_clear_site_is_allowed(page, demo_server, demo_city, tmp_path):
    verdict = upload_site(page, demo_server, demo_city, "clear", tmp_path)
    assert "allowed" in verdict and "prohibited" not in verdict
    assert "2301" not in hit_codes(page)
    assert page.errors == []


def test_conflict_page_lists_the_planted_conflicts(page, demo_server, demo_city):
    listed = httpx.get(f"{demo_server.url}/api/v1/conflicts", params={"page_size": 100}).json()
    planted = {(c["rule"], c["a_fid"]) for c in demo_city.manifest["conflicts"]}
    assert {(c["rule"], c["a_fid"]) for c in listed["items"]} == planted
    open_page(page, demo_server.url + "/conflicts")
    items = page.page.locator("#bp-conflict-list .bp-conflict")
    items.first.wait_for(timeout=10_000)
    page.page.wait_for_function(
        f"document.querySelectorAll('#bp-conflict-list .bp-conflict').length === {len(planted)}", timeout=10_000)
    page.shot("demo-conflicts")
    assert page.errors == []
