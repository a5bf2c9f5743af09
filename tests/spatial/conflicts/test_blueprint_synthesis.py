"""The consolidated blueprint: a gap-free, overlap-free coverage of the city, first entry wins."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import sqlalchemy as sa

from layers import frames
from layers.errors import InvalidInput
from spatial.blueprint import export_blueprint, synthesize
from tests.spatial.conflicts.conftest import city_layers, load

URBAN = {"E1": "water", "E2": "agricultural", "E9": "other"}  # every other GB 50137 code is construction
LANDUSE = {"111": "agricultural", "112": "agricultural", "113": "ecological", "114": "agricultural",
           "115": "agricultural", "311": "water", "312": "ecological"}  # 2xx: construction


def expected_at(layers, points):
    """The class, layer and fid that should hold each point, by walking the priority by hand."""
    order = [
        ("2301", lambda f: f, lambda f: "ecological"),
        ("2103", lambda f: f, lambda f: "agricultural"),
        ("2302", lambda f: f[f.grade == "1"], lambda f: "water"),
        ("2401", lambda f: f[f.grade.isin(["I", "II"])], lambda f: "ecological"),
        ("2402", lambda f: f, lambda f: "ecological"),
        ("2201", lambda f: f, lambda f: URBAN.get(f.ydlb, "construction")),
        ("2104", lambda f: f, lambda f: "construction" if f.ghdl[0] == "2" else LANDUSE[f.ghdl]),
    ]
    out: list = [("other", "1101", None)] * len(points)
    done = np.zeros(len(points), dtype=bool)
    for code, choose, cls in order:
        chosen = choose(layers[code]).sort_values("fid").reset_index(drop=True)
        pi, fi = shapely.STRtree(chosen.geometry.values).query(points, predicate="within")
        for p in np.unique(pi):
            if not done[p]:
                row = chosen.iloc[fi[pi == p].min()]  # sorted by fid: the lowest fid holding the point
                out[p] = (cls(row), code, int(row.fid))
                done[p] = True
    return out


def blueprint_at(frame, points):
    geoms = np.asarray(frame.geometry.values)
    pi, gi = shapely.STRtree(geoms).query(points, predicate="within")
    assert np.array_equal(np.sort(pi), np.arange(len(points))), "each point lies in exactly one piece"
    rows = frame.iloc[gi[np.argsort(pi)]]
    return [(r.unified_class, r.source_layer, None if r.source_fid is None or r.source_fid != r.source_fid
             else int(r.source_fid)) for r in rows.itertuples()]


def overlap_area(geoms) -> float:
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    return float(shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])).sum())


def test_blueprint_covers_the_city_once(city, empty_store, settings):
    frame, report = synthesize(empty_store, settings)
    city_area = shapely.union_all(city["1101"].geometry.values).area
    geoms = np.asarray(frame.geometry.values)
    area = shapely.area(geoms).sum()
    assert area == pytest.approx(city_area, rel=1e-6) and report.city_area_m2 == pytest.approx(city_area, rel=1e-12)
    assert overlap_area(geoms) <= 1e-9 * city_area
    assert shapely.union_all(geoms).area == pytest.approx(area, rel=1e-9)
    assert set(frame.unified_class) <= {"construction", "agricultural", "ecological", "water", "other"}
    assert report.skipped == [] and set(report.versions) == {"2301", "2103", "2302", "2401", "2402", "2201", "2104"}


def test_first_matching_entry_wins_everywhere(city, empty_store, settings):
    frame, _ = synthesize(empty_store, settings, save=False)
    rng = np.random.default_rng(3)
    x0, y0, x1, y1 = city["1101"].total_bounds
    points = shapely.points(rng.uniform(x0, x1, 2000), rng.uniform(y0, y1, 2000))
    assert blueprint_at(frame, points) == expected_at(city, points)
    # the red line and the farmland overlap in this city: the red line holds the overlap
    red, farm = city["2301"].geometry.union_all(), city["2103"].geometry.union_all()
    assert red.intersection(farm).area > 100
    farm_pieces = frame[frame.source_layer == "2103"].geometry.union_all()
    assert farm_pieces.intersection(red).area < 1e-6


def test_what_no_plan_covers_is_other(register, settings):
    layers = city_layers()
    for code in ("1101", "2301", "2302"):
        load(register, settings, code, layers[code])
    frame, report = synthesize(register, settings)
    city = shapely.union_all(layers["1101"].geometry.values)
    red = shapely.union_all(layers["2301"].geometry.values).intersection(city)
    water1 = layers["2302"][layers["2302"].grade == "1"]
    held = shapely.union(red, shapely.union_all(water1.geometry.values).intersection(city))
    other = frame[frame.unified_class == "other"]
    assert other.area.sum() == pytest.approx(city.area - held.area, rel=1e-9)
    assert (other.control_level == "none").all() and (other.source_layer == "1101").all()
    assert frame.area.sum() == pytest.approx(city.area, rel=1e-9)
    assert {s["layer"] for s in report.skipped} == {"2103", "2401", "2402", "2201", "2104"}


def test_blueprint_is_stored_as_a_new_version_of_3105(city, empty_store, settings, tmp_path):
    frame, first = synthesize(empty_store, settings)
    _, second = synthesize(empty_store, settings)
    assert (first.version, second.version) == (1, 2)
    with empty_store.connect() as conn:
        stored = frames.read_layer(conn, "3105", srid=4548)
        coverage = conn.execute(sa.text("SELECT ST_Area(coverage), source_name FROM layer_version WHERE id = :v"),
                                {"v": second.version_id}).one()
    assert len(stored) == len(frame) == second.features
    assert stored.geometry.area.sum() == pytest.approx(second.city_area_m2, rel=1e-6)
    assert coverage[0] == pytest.approx(second.city_area_m2, rel=1e-9) and "2301v1" in coverage[1]
    assert set(stored.columns) >= {"unified_class", "control_level", "source_layer", "source_version", "designation"}
    assert (stored.source_version == 1).all()
    path = export_blueprint(frame, tmp_path / "blueprint.gpkg")
    import geopandas as gpd

    assert gpd.read_file(path).area.sum() == pytest.approx(second.city_area_m2, rel=1e-9)


def test_unknown_city_extent_is_an_error(register, settings):
    with pytest.raises(InvalidInput, match="city's extent is unknown"):
        synthesize(register, settings)


def test_big_polygons_keep_to_their_own_area(register, settings):
    from tests.spatial.conflicts.conftest import CITY, frame, grid, jagged

    rng = np.random.default_rng(11)
    layers = city_layers()
    big = jagged(rng, 5, radius=(200, 320), vertices=400)  # above the overlay kernel's subdivision limit
    cells = grid(250.0)
    plan = frame([*big, *cells], ydlb=["R2", "M1", "B1", "E2", "A1"] + ["E9"] * len(cells))
    red = frame(jagged(rng, 2, radius=(250, 350), vertices=600), redline_type=["karst", "karst"])
    for code, gdf in (("1101", layers["1101"]), ("2301", red), ("2201", plan)):
        load(register, settings, code, gdf)
    out, report = synthesize(register, settings, save=False)
    raw = {("2301", r.fid): r.geometry for r in red.itertuples()} | {("2201", r.fid): r.geometry
                                                                      for r in plan.itertuples()}
    outside = [piece.difference(raw[(layer, int(fid))]).area
               for layer, fid, piece in zip(out.source_layer, out.source_fid, out.geometry, strict=True)
               if fid is not None and fid == fid]
    assert max(outside) < 1e-6
    geoms = np.asarray(out.geometry.values)
    assert shapely.area(geoms).sum() == pytest.approx(CITY.area, rel=1e-9)
    assert overlap_area(geoms) <= 1e-9 * CITY.area
    # a big plan polygon under the red line gives way to it
    held = out[(out.source_layer == "2201") & (out.source_fid <= 5)].geometry.union_all()
    assert held.intersection(red.geometry.union_all()).area < 1e-6
