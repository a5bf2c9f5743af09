"""The generated demo city against the catalogue and the conflict rules, checked independently:
the catalogue and rules are read from their YAML files here, and overlaps are computed with
geopandas/shapely, not with project code. No database needed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import rasterio.mask
import shapely
import yaml

from layers.demo import Manifest, generate_city

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = yaml.safe_load((ROOT / "layers" / "catalogue.yaml").read_text(encoding="utf-8"))
RULES = yaml.safe_load((ROOT / "spatial" / "rules" / "conflicts.yaml").read_text(encoding="utf-8"))
MINORS = {m["code"]: m for major in CATALOGUE["majors"] for mid in major["middles"] for m in mid["minors"]}
ARROW = {"string": "string", "integer": "int64", "number": "double", "date": "date32[day]", "boolean": "bool"}
GEOMETRY = {"polygon": {"Polygon", "MultiPolygon"}, "line": {"LineString"}, "point": {"Point"}}
COVERAGES = ("1201", "2101", "2102", "2104", "2201", "2304")


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("jinan")
    return out, generate_city(out, scale=1, seed=0)


@pytest.fixture(scope="module")
def frames(city) -> dict[str, gpd.GeoDataFrame]:
    out, manifest = city
    return {code: gpd.read_parquet(out / meta["file"]) for code, meta in manifest.layers.items()}


@pytest.fixture(scope="module")
def boundary(city) -> shapely.Polygon:
    out, manifest = city
    cov = gpd.read_parquet(out / manifest.coverage)
    assert len(cov) == 1 and cov.crs.to_epsg() == 4548
    return cov.geometry.iloc[0]


def test_manifest_lists_every_file(city, frames):
    out, manifest = city
    assert manifest.city == "Jinan" and manifest.srid == 4548 and manifest.scale == 1
    assert len(manifest.layers) >= 25
    families = {code[:2] for code in manifest.layers}
    assert {"11", "12", "13", "21", "22", "23", "24", "25", "31", "32", "41"} <= families
    for code, meta in manifest.layers.items():
        assert len(frames[code]) == meta["features"] > 0, code
    assert set(manifest.rasters) == {"1102", "1103"}
    assert {"districts", "land_cover"} <= set(manifest.sources)
    assert 100_000 <= manifest.feature_count <= 200_000
    assert Manifest.read(out) == manifest


def test_attributes_pass_the_catalogue(city, frames):
    out, manifest = city
    for code in manifest.layers:
        _check_layer(out / manifest.layers[code]["file"], MINORS[code], frames[code])


def _check_layer(path: Path, minor: dict, frame: gpd.GeoDataFrame) -> None:
    attrs = minor["attributes"]
    assert list(frame.columns) == ["fid", *[a["name"] for a in attrs], "geometry"]
    schema = pq.read_schema(path)
    assert str(schema.field("fid").type) == "int64" and frame["fid"].is_unique
    assert frame.crs.to_epsg() == 4548
    for attr in attrs:
        col = frame[attr["name"]]
        assert str(schema.field(attr["name"]).type) == ARROW[attr["type"]], attr["name"]
        if attr.get("required"):
            assert col.notna().all(), attr["name"]
        present = col.dropna()
        if "values" in attr:
            assert set(present) <= {str(v) if attr["type"] == "string" else v for v in attr["values"]}, attr["name"]
        if "min" in attr:
            assert (present >= attr["min"]).all(), attr["name"]
        if "max" in attr:
            assert (present <= attr["max"]).all(), attr["name"]
        if "pattern" in attr:
            assert all(re.fullmatch(attr["pattern"], v) for v in present), attr["name"]
    assert set(frame.geom_type) <= GEOMETRY[minor["geometry_type"]]
    assert frame.is_valid.all() and not frame.is_empty.any()


@pytest.mark.parametrize("code", COVERAGES)
def test_coverages_are_gap_and_overlap_free(frames, boundary, code):
    geoms = frames[code].geometry.values
    assert shapely.coverage_is_valid(geoms), "overlapping or unmatched edges"
    union = shapely.coverage_union_all(geoms)
    city = boundary.area
    assert abs(shapely.area(geoms).sum() - city) / city < 1e-6
    assert shapely.difference(boundary, union).area / city < 1e-6
    assert shapely.difference(union, boundary).area / city < 1e-6


def _harmonise(scheme: str, value: str) -> str:
    table = RULES["harmonisation"][scheme]
    prefix = max((p for p in table if value.startswith(p)), key=len)
    return table[prefix]


def _side(frames, side: dict) -> gpd.GeoDataFrame:
    frame = frames[side["layer"]]
    keep = np.ones(len(frame), dtype=bool)
    for attr, values in side.get("where", {}).items():
        keep &= frame[attr].astype(str).isin([str(v) for v in values]).to_numpy()
    if "scheme" in side:
        unified = frame[side["field"]].map(lambda v: _harmonise(side["scheme"], v))
        keep &= unified.isin(side["classes"]).to_numpy()
        keep &= ~frame[side["field"]].isin(side.get("exclude", [])).to_numpy()
    return frame[keep]


@pytest.mark.parametrize("rule", RULES["rules"], ids=lambda r: r["code"])
def test_only_planted_conflicts(city, frames, rule):
    """Overlap under each rule, computed here, is exactly the planted cases (< 1 m² elsewhere)."""
    _, manifest = city
    planted = [c for c in manifest.conflicts if c["rule"] == rule["code"]]
    assert len(planted) >= 2
    a, b = _side(frames, rule["a"]), _side(frames, rule["b"])
    fid_a = a["fid"].to_numpy()
    if rule["operation"] == "difference":  # a minus the union of every b
        union = shapely.union_all(b.geometry.values)
        shapely.prepare(union)
        out = ~shapely.covers(union, a.geometry.values)  # only these can stick out
        rest = shapely.area(shapely.difference(a.geometry.values[out], union))
        found = {(int(f), None): area for f, area in zip(fid_a[out], rest, strict=True) if area > 0}
    else:
        ia, ib = b.sindex.query(a.geometry, predicate="intersects")
        if "compare" in rule:  # only pairs whose harmonised values differ can conflict
            cmp, via = rule["compare"], rule["compare"]["via"]
            va = a[cmp["a_field"]].map(lambda v: _harmonise(via, v)).to_numpy()
            vb = b[cmp["b_field"]].map(lambda v: _harmonise(via, v)).to_numpy()
            ia, ib = ia[va[ia] != vb[ib]], ib[va[ia] != vb[ib]]
        areas = shapely.area(shapely.intersection(a.geometry.values[ia], b.geometry.values[ib]))
        found = {}
        for fa, fb, area in zip(fid_a[ia], b["fid"].to_numpy()[ib], areas, strict=True):
            found[(int(fa), int(fb))] = found.get((int(fa), int(fb)), 0.0) + area
    expected = {(c["a_fid"], c["b_fid"]): c["area_m2"] for c in planted}
    for key, area in expected.items():
        assert found.get(key, 0.0) == pytest.approx(area, abs=0.01), key
    stray = sum(area for key, area in found.items() if key not in expected)
    assert stray < 1.0


def test_planted_conflict_polygons(city, frames):
    _, manifest = city
    polys = []
    for case in manifest.conflicts:
        a = frames[case["a_layer"]].set_index("fid").geometry[case["a_fid"]]
        if case["b_fid"] is None:
            b = shapely.union_all(frames[case["b_layer"]].geometry.values)
            area = shapely.difference(a, b).area
        else:
            area = shapely.intersection(a, frames[case["b_layer"]].set_index("fid").geometry[case["b_fid"]]).area
        poly = shapely.from_wkt(case["wkt"])
        assert area == pytest.approx(case["area_m2"], abs=0.01)
        assert poly.area == pytest.approx(case["area_m2"], abs=0.01)
        assert case["area_m2"] >= 1_000
        polys.append(poly)
    assert len({c["rule"] for c in manifest.conflicts}) == len(RULES["rules"])
    tree = shapely.STRtree(polys)
    left, right = tree.query(polys, predicate="intersects")
    assert (left == right).all(), "two planted conflicts touch"


def test_red_line_is_drawn_finely(frames):
    vertices = shapely.get_num_coordinates(frames["2301"].geometry.values)
    assert vertices.max() > 20_000


def test_sites(city, frames, boundary):
    out, manifest = city
    sites = {name: shapely.from_wkt(s["wkt"]) for name, s in manifest.sites.items()}
    assert set(sites) == {"clear", "redline", "straddle", "assessed", "outside"}
    for name, geom in sites.items():
        assert 9_000 < geom.area < 11_000
        lonlat = shapely.geometry.shape(manifest.sites[name]["geojson"])
        assert 116 < lonlat.centroid.x < 118.2 and 35.8 < lonlat.centroid.y < 37.7
        assert manifest.sites[name]["expected"] == name
    parcels = frames["2203"].set_index("fid")
    clear = manifest.sites["clear"]
    assert len(clear["parcels"]) == 1 and parcels.geometry[clear["parcels"][0]["fid"]].contains(sites["clear"])
    assert frames["2202"].intersects(sites["clear"]).any()
    for code, attr, value in (("2102", "zone_type", "allowed"), ("2304", "zone_class", "IV")):
        hits = frames[code][frames[code].intersects(sites["clear"])]
        assert set(hits[attr]) == {value}
    for code, frame in frames.items():  # nothing constrains the clear site beyond "allowed"
        control = MINORS[code]["control"]
        by = control.get("by_attribute")
        for _, hit in frame[frame.intersects(sites["clear"])].iterrows():
            level = by["levels"].get(str(hit[by["field"]]), control["level"]) if by else control["level"]
            assert level in ("none", "allowed"), (code, level)
    with rasterio.open(out / "1103.tif") as src:
        slope, _ = rasterio.mask.mask(src, [sites["clear"]], crop=True, all_touched=True, filled=False)
    assert slope.max() < 25
    shares = {p["fid"]: p["share"] for p in manifest.sites["straddle"]["parcels"]}
    assert len(shares) == 2 and sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    for fid, share in shares.items():
        inside = parcels.geometry[fid].intersection(sites["straddle"]).area
        assert inside / sites["straddle"].area == pytest.approx(share, abs=1e-6)
    assert frames["2301"].set_index("fid").geometry[manifest.sites["redline"]["redline_fid"]].contains(sites["redline"])
    zones = frames["3201"].set_index("fid")
    zone = manifest.sites["assessed"]
    assert zones.geometry[zone["zone_fid"]].contains(sites["assessed"])
    assert zones["zone_id"][zone["zone_fid"]] == zone["zone_id"]
    assert sites["outside"].distance(boundary) > 1_000


def test_rasters(city, boundary):
    out, _ = city
    for code, lo, hi in (("1102", 0, 1_400), ("1103", 0, 80)):
        with rasterio.open(out / f"{code}.tif") as src:
            assert src.crs.to_epsg() == 4548 and src.res == (100.0, 100.0) and src.dtypes[0] == "float32"
            band = src.read(1, masked=True)
        assert lo <= band.min() and band.max() <= hi
        if code == "1103":
            assert (band > 25).sum() > 100  # steep hills exist


def test_same_seed_gives_identical_files(city, tmp_path):
    out, manifest = city
    again = generate_city(tmp_path, scale=1, seed=0)
    assert again == manifest
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in tmp_path.iterdir())
    for name in files:
        digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (out, tmp_path)]
        assert digest[0] == digest[1], name
