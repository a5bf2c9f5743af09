"""`blueprint site check|show` and `blueprint assess` give the API's answers, in numbers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import geopandas as gpd
import pytest
import shapely

from api.cli.main import main
from tests.site.city import SITE_DATABASE, SITES


@pytest.fixture
def run(capsys, monkeypatch):
    """Run the CLI in this process (as `python -m api.cli.main` would) on the test database."""
    monkeypatch.setenv("BLUEPRINT_DATABASE", SITE_DATABASE)

    def invoke(*args) -> SimpleNamespace:
        code = main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return invoke


def test_site_check_json_matches_the_api(run, city, client, tmp_path):
    path = tmp_path / "site.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(SITES["straddle"])}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    cli = run("site", "check", str(path), "--crs", "EPSG:4548", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    api = client.post("/api/v1/sites/check", json={"geometry": feature["geometry"], "crs": "EPSG:4548"}).json()
    for key in ("verdict", "constraints", "planning_conditions", "terrain", "assessments", "versions"):
        assert from_cli[key] == api[key], key
    shown = run("site", "show", from_cli["check_id"], "--format", "html", "-o", str(tmp_path / "c.html"))
    assert shown.returncode == 0 and "建设用地规划条件" in (tmp_path / "c.html").read_text(encoding="utf-8")


def test_site_check_text_and_geopackage(run, city, tmp_path):
    path = tmp_path / "site.gpkg"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[SITES["redline"]], crs=4548).to_file(path)
    cli = run("site", "check", str(path))
    assert cli.returncode == 0, cli.stderr
    assert "PROHIBITED" in cli.stdout and "2,500 m²" in cli.stdout and "2301" in cli.stdout


def test_site_check_errors_are_one_line(run, city, tmp_path):
    path = tmp_path / "bad.geojson"
    path.write_text('{"type": "Polygon", "coordinates": [[[117, 36], [117.01, 36], [117, 36.01]]]}')
    cli = run("site", "check", str(path))
    assert cli.returncode == 2 and cli.stderr.startswith("blueprint: error:") and cli.stderr.count("\n") == 1
    missing = run("site", "show", "SC-20000101-0000000000")
    assert missing.returncode == 2 and "no site check" in missing.stderr


def test_assess_prints_results_in_numbers(run, city):
    cli = run("assess", "DZ01", "--type", "flood_impact", "--force")
    assert cli.returncode == 0, cli.stderr
    assert "flood_impact" in cli.stdout and "fail" in cli.stdout and "25.0%" in cli.stdout
    assert run("assess", "NOPE").returncode == 2
