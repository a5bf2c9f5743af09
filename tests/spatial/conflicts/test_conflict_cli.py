"""`blueprint conflicts ...` and `blueprint synthesize`: what they print, one-line errors."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
import sqlalchemy as sa

from api.cli.main import main
from spatial.conflicts.rules import load_rules


@pytest.fixture
def cli(settings, monkeypatch):
    """Run the CLI in this process against the test database; return (exit code, stdout, stderr)."""
    if settings.database.database_url:
        monkeypatch.setenv("DATABASE_URL", settings.database.database_url)
    else:
        monkeypatch.setenv("BLUEPRINT_DATABASE", settings.database.embedded_database)

    def run(capsys, *args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_run_prints_summary_by_type_and_district(cli, capsys, city, empty_store):
    code, out, err = cli(capsys, "conflicts", "run")
    assert code == 0, err
    with empty_store.connect() as conn:
        counts = dict(conn.execute(sa.text("SELECT rule, count(*) FROM conflict GROUP BY rule")).all())
        districts = dict(conn.execute(sa.text("SELECT district_code, count(*) FROM conflict GROUP BY 1")).all())
    total = sum(counts.values())
    assert f"{total:,} conflicts" in out and f"0 kept, 0 closed, {total:,} new" in out
    lines = out.splitlines()
    for rule, n in counts.items():
        line = next(x for x in lines if x.strip().startswith(rule + " "))
        assert f" {n:,} " in line and line.rstrip().endswith(load_rules().rule(rule).name_zh) and " s  " in line
    for district, n in districts.items():
        assert any(x.strip().startswith(district) and f" {n:,} " in x for x in lines)
    assert "timings: read" in out and "conflicts: read 2201" in err


def test_list_status_export_and_runs(cli, capsys, city, empty_store, tmp_path):
    cli(capsys, "conflicts", "run", "--format", "json")
    code, out, _ = cli(capsys, "conflicts", "list", "--type", "CT03", "--format", "json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == len(listed["items"]) > 0
    cid = listed["items"][0]["id"]
    assert cli(capsys, "conflicts", "status", str(cid), "--set", "assigned", "--by", "规划科")[0] == 0
    code, out, _ = cli(capsys, "conflicts", "status", str(cid), "--set", "resolved", "--plan", "b", "--note", "n")
    assert code == 0 and "assigned → resolved, plan b adjusted" in out
    code, _, err = cli(capsys, "conflicts", "status", str(cid), "--set", "accepted", "--note", "x")
    assert code == 2 and err.startswith("blueprint: error: a conflict that is resolved") and err.count("\n") == 1
    code, out, _ = cli(capsys, "conflicts", "export", "--format", "gpkg", "-o", str(tmp_path / "c.gpkg"), "--run", "1")
    assert code == 0 and len(gpd.read_file(tmp_path / "c.gpkg")) == int(out.split()[1].replace(",", ""))
    code, out, _ = cli(capsys, "conflicts", "runs", "--format", "json")
    assert code == 0 and json.loads(out)[0]["changes"]["new"] > 0
    code, _, err = cli(capsys, "conflicts", "export", "-o", str(tmp_path / "c.csv"))
    assert code == 2 and "export format" in err
    code, _, err = cli(capsys, "conflicts", "list", "--type", "CT99")
    assert code == 2 and "unknown conflict type" in err


def test_synthesize_exports(cli, capsys, city, tmp_path):
    code, out, err = cli(capsys, "synthesize", "--export", str(tmp_path / "bp.geojson"))
    assert code == 0, err
    assert "layer 3105 v1" in out and "2,000,000.0 m² of the city's 2,000,000.0 m²" in out
    back = gpd.read_file(tmp_path / "bp.geojson")
    assert back.crs.to_epsg() == 4326 and set(back.unified_class) >= {"construction", "ecological"}
    code, _, err = cli(capsys, "synthesize", "--export", str(tmp_path / "bp.shp"))
    assert code == 2 and "export format" in err
