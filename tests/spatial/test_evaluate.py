"""Rule evaluation against an independent computation: plain pandas filters + geopandas.overlay."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from spatial.conflicts.evaluate import COLUMNS, evaluate_rule
from spatial.conflicts.rules import load_rules

X0, Y0 = 500_000.0, 4_000_000.0
CRS = "EPSG:4548"
RULES = load_rules()

# GB 50137 construction land is every major class but E (water and other non-construction land)
CATALOGUE_MINORS = {
    "R": "123",
    "A": "1235",
    "B": "12",
    "M": "123",
    "W": "1",
    "S": "134",
    "U": "1",
    "G": "123",
    "H": "23",
}
CONSTRUCTION_YDLB = {major + minor for major, minors in CATALOGUE_MINORS.items() for minor in minors}
YDLB = sorted(CONSTRUCTION_YDLB | {"E1", "E2", "E9"})
NON_CONSTRUCTION_GHDL = {"111", "112", "113", "114", "115", "311", "312"}
GHDL = sorted(NON_CONSTRUCTION_GHDL | {"211", "212", "213", "214", "221", "222"})
LAND_USE = sorted(CONSTRUCTION_YDLB - {"H2", "H3"})  # regulatory parcels have no H or E uses


def quads(nx: int, ny: int, *, cell: float, seed: int, angle: float = 0.0, shift=(0.0, 0.0)) -> np.ndarray:
    """A coverage of jittered quadrilaterals, densified to ~1 vertex per 10 m."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(nx + 1.0), np.arange(ny + 1.0))
    n = np.stack([gx, gy], -1) + rng.uniform(-0.2, 0.2, (ny + 1, nx + 1, 2))
    ring = np.stack([n[:-1, :-1], n[:-1, 1:], n[1:, 1:], n[1:, :-1], n[:-1, :-1]], 2).reshape(-1, 5, 2) * cell
    t = np.radians(angle)
    ring = ring @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) + (X0 + shift[0], Y0 + shift[1])
    return shapely.segmentize(shapely.polygons(ring), 10.0)


def disc(n: int, radius: float, cx: float, cy: float) -> shapely.Polygon:
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius * (1 + 0.1 * np.sin(5 * theta))
    ring = np.c_[cx + r * np.cos(theta), cy + r * np.sin(theta)]
    return shapely.Polygon(np.r_[ring, ring[:1]])


def frame(geoms, fid, crs=CRS, **attrs) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"fid": fid, **attrs}, geometry=list(geoms), crs=crs)


@pytest.fixture(scope="module")
def layers() -> dict[str, gpd.GeoDataFrame]:
    rng = np.random.default_rng(7)
    plan = quads(16, 12, cell=100.0, seed=1)
    land = quads(14, 14, cell=110.0, seed=2, angle=13.0, shift=(60.0, -180.0))
    parcels = quads(12, 12, cell=120.0, seed=3, angle=-8.0, shift=(30.0, 40.0))
    return {
        "2201": frame(plan, 1000 + np.arange(len(plan)), ydlb=rng.choice(YDLB, len(plan))),
        "2104": frame(land, [f"L{i:04d}" for i in range(len(land))], ghdl=rng.choice(GHDL, len(land))),
        "2203": frame(
            parcels,
            5000 + np.arange(len(parcels)),
            land_use=rng.choice(LAND_USE, len(parcels)),
            parcel_id=[f"P{i}" for i in range(len(parcels))],
        ),
        "2301": frame(
            [disc(6000, 420.0, X0 + 800, Y0 + 600), shapely.box(X0 + 1300, Y0, X0 + 1500, Y0 + 300)],
            [1, 2],
            redline_type=["biodiversity", "karst"],
        ),
        "2202": frame(
            [disc(800, 520.0, X0 + 700, Y0 + 550), shapely.box(X0 + 1200, Y0 + 700, X0 + 1700, Y0 + 1300)],
            [11, 12],
            boundary_type=["central_city", "town"],
        ),
    }


def expected(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame, how: str = "intersection") -> pd.DataFrame:
    """geopandas.overlay on already filtered frames, pieces of at least 1 m² (the rules' min_area_m2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = gpd.overlay(
            a.rename(columns={"fid": "a_fid"}), b.rename(columns={"fid": "b_fid"}), how=how, keep_geom_type=True
        )
    out["area_m2"] = out.area
    out = out[out["area_m2"] >= 1.0]
    return out.sort_values([c for c in ("a_fid", "b_fid") if c in out]).reset_index(drop=True)


def assert_same(got: gpd.GeoDataFrame, want: pd.DataFrame, code: str) -> None:
    assert list(got.columns) == COLUMNS
    assert got.crs == CRS
    assert (got["rule"] == code).all()
    assert got["a_fid"].tolist() == want["a_fid"].tolist()
    if "b_fid" in want:
        assert got["b_fid"].tolist() == want["b_fid"].tolist()
    np.testing.assert_allclose(got["area_m2"], want["area_m2"], rtol=1e-9)
    np.testing.assert_allclose(got["area_m2"], got.area, rtol=1e-12)
    assert got.geometry.is_valid.all() and got.geom_type.isin(["Polygon", "MultiPolygon"]).all()


def test_classes_on_both_sides(layers):
    plan, land = layers["2201"], layers["2104"]
    got = evaluate_rule(RULES.rule("CT01"), plan, land)
    want = expected(plan[plan["ydlb"].isin(CONSTRUCTION_YDLB)], land[land["ghdl"].isin(NON_CONSTRUCTION_GHDL)])
    assert len(want) > 50
    assert_same(got, want, "CT01")
    assert got["b_fid"].str.startswith("L").all()  # ids keep their type


def test_big_red_line(layers):
    plan, redline = layers["2201"], layers["2301"]
    assert shapely.get_num_coordinates(redline.geometry.iloc[0]) > 5000
    got = evaluate_rule(RULES.rule("CT03"), plan, redline)
    want = expected(plan[plan["ydlb"].isin(CONSTRUCTION_YDLB)], redline)
    assert len(want) > 20
    assert_same(got, want, "CT03")
    assert got["a_fid"].dtype == plan["fid"].dtype


def test_difference_outside_the_boundary(layers):
    plan, boundary = layers["2201"], layers["2202"]
    got = evaluate_rule(RULES.rule("CT08"), plan, boundary)
    urban = plan[plan["ydlb"].isin(CONSTRUCTION_YDLB - {"H2", "H3"})]
    want = expected(urban, boundary, how="difference")
    assert 20 < len(want) < len(urban)  # some parcels lie wholly inside and drop out
    assert_same(got, want, "CT08")
    assert got["b_fid"].isna().all() and str(got["b_fid"].dtype) == "Int64"


def test_compare_keeps_only_differing_uses(layers):
    parcels, plan = layers["2203"], layers["2201"]
    got = evaluate_rule(RULES.rule("CT09"), parcels, plan)
    want = expected(parcels, plan)
    want = want[want["land_use"].str[0] != want["ydlb"].str[0]].reset_index(drop=True)
    assert len(want) > 50
    assert_same(got, want, "CT09")


def test_where_filter_and_sliver_threshold():
    plan = frame([shapely.box(X0, Y0, X0 + 100, Y0 + 100)] * 3, [1, 2, 3], ydlb=["R2", "M1", "E2"])
    forest = frame(
        [
            shapely.box(X0 + 99.5, Y0, X0 + 200, Y0 + 1),  # 0.5 m² sliver: below min_area_m2
            shapely.box(X0 + 98.5, Y0 + 10, X0 + 200, Y0 + 11),  # 1.5 m²
            shapely.box(X0 + 50, Y0 + 50, X0 + 200, Y0 + 200),
        ],  # grade III: not selected
        ["f1", "f2", "f3"],
        grade=["I", "II", "III"],
    )
    got = evaluate_rule(RULES.rule("CT05"), plan, forest, threads=1)
    assert list(zip(got["a_fid"], got["b_fid"], strict=True)) == [(1, "f2"), (2, "f2")]
    np.testing.assert_allclose(got["area_m2"], [1.5, 1.5])


def test_nothing_selected_gives_an_empty_frame(layers):
    water = frame([shapely.box(X0, Y0, X0 + 500, Y0 + 500)], [1], ydlb=["E1"])
    got = evaluate_rule(RULES.rule("CT03"), water, layers["2301"])
    assert got.empty and list(got.columns) == COLUMNS and got.crs == CRS
    got = evaluate_rule(RULES.rule("CT08"), water, layers["2202"])
    assert got.empty and list(got.columns) == COLUMNS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.to_crs(4326), "different CRSs"),
        (lambda f: f.set_crs(None, allow_override=True), "have no CRS"),
        (lambda f: f.drop(columns="fid"), "have no fid column"),
        (lambda f: f.drop(columns="redline_type").set_crs(4490, allow_override=True), "different CRSs"),
    ],
)
def test_bad_frames_are_refused(layers, change, message):
    with pytest.raises(ValueError, match=message):
        evaluate_rule(RULES.rule("CT03"), layers["2201"], change(layers["2301"]))


def test_geographic_crs_is_refused(layers):
    plan, redline = layers["2201"].to_crs(4490), layers["2301"].to_crs(4490)
    with pytest.raises(ValueError, match="is geographic"):
        evaluate_rule(RULES.rule("CT03"), plan, redline)
