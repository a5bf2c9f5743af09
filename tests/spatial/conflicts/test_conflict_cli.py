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


def test_list_checks_filters_and_show_gives_the_rule(cli, capsys, city):
    cli(capsys, "conflicts", "run", "--format", "json")
    for args, message in ((["--district", "999999"], "unknown district '999999'"),
                          (["--run", "77"], "unknown conflict run 77"), (["--type", "CT99"], "unknown conflict type")):
        code, _, err = cli(capsys, "conflicts", "list", *args)
        assert code == 2 and message in err and err.count("\n") == 1, args
    code, out, _ = cli(capsys, "conflicts", "list", "--type", "CT05", "--district", "370102", "--run", "1",
                       "--format", "json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] > 0
    assert {(c["rule"], c["district"]) for c in listed["items"]} == {("CT05", "370102")}
    code, out, _ = cli(capsys, "conflicts", "show", str(listed["items"][0]["id"]))
    shown = json.loads(out)
    rule = load_rules().rule("CT05")
    assert code == 0 and shown["advice_zh"] == rule.advice_zh and shown["prevails"] == rule.prevails
    assert [e["status"] for e in shown["events"]] == ["open"]
    code, _, err = cli(capsys, "conflicts", "show", "999999")
    assert code == 2 and "no conflict 999999" in err


def test_synthesize_again_is_skipped_until_an_input_changes(cli, capsys, city, empty_store, settings, tmp_path):
    from spatial.conflicts.rules import RULES_PATH
    from tests.spatial.conflicts.conftest import load

    def versions() -> int:
        with empty_store.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM layer_version WHERE layer_code = '3105'")).scalar_one()

    assert cli(capsys, "synthesize")[0] == 0 and versions() == 1
    code, out, err = cli(capsys, "synthesize", "--export", str(tmp_path / "bp.gpkg"))
    assert code == 0 and versions() == 1, err
    assert out.startswith("blueprint unchanged: layer 3105 v1 (") and "--force builds it again" in out
    features = int(out.split("(")[1].split()[0].replace(",", ""))
    assert len(gpd.read_file(tmp_path / "bp.gpkg")) == features and f"wrote {features:,} features" in out
    load(empty_store, settings, "2402", city["2402"], source="2402.v2")  # a new version of a layer it reads
    code, out, _ = cli(capsys, "synthesize")
    assert code == 0 and "layer 3105 v2" in out and versions() == 2
    edited = tmp_path / "conflicts.yaml"
    edited.write_bytes(RULES_PATH.read_bytes() + b"\n# reviewed again\n")
    assert "layer 3105 v3" in cli(capsys, "synthesize", "--rules", str(edited))[1]
    assert "unchanged" in cli(capsys, "synthesize", "--rules", str(edited))[1]
    assert "layer 3105 v4" in cli(capsys, "synthesize", "--rules", str(edited), "--force")[1] and versions() == 4
