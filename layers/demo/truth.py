"""Ground truth for the manifest: the planted conflict polygons and the expected site answers,
computed from the generated features themselves (the same geometries that are written)."""

from __future__ import annotations

import json

import shapely

from layers.demo.derive import Layer
from layers.demo.planting import Plan
from layers.demo.sources import project_geometry

WKT_DIGITS = -1  # full precision: the WKT is the exact polygon


def _feature_at(layer: Layer, geom) -> int:
    """Index of the one feature of ``layer`` containing a point inside ``geom``."""
    hit = shapely.STRtree(layer.geoms).query(shapely.point_on_surface(geom), predicate="within")
    if len(hit) != 1:
        raise RuntimeError(f"layer {layer.code}: {len(hit)} features hold the planted piece")
    return int(hit[0])


def _polygonal(geom):
    """The areal part of an overlay result: features that only touch add zero-area lines."""
    parts = [p for p in shapely.get_parts(geom) if shapely.get_type_id(p) == 3]
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def conflicts(plan: Plan, layers: dict[str, Layer]) -> list[dict]:
    """One entry per planted case: the features involved (fids are 1-based row numbers) and
    the exact conflict polygon (a ∩ b, or a minus every b for a difference rule)."""
    out = []
    for case in plan.cases:
        piece = plan.pieces[case.conflict].geom
        a = layers[case.a_layer]
        ai = _feature_at(a, piece)
        entry = {"rule": case.rule, "a_layer": case.a_layer, "a_fid": ai + 1, "b_layer": case.b_layer}
        if case.b_layer is None:  # difference: a outside the development boundary
            b = layers["2202"]
            near = shapely.STRtree(b.geoms).query(a.geoms[ai], predicate="intersects")
            geom = shapely.difference(a.geoms[ai], shapely.union_all(b.geoms[near]))
            entry["b_layer"], entry["b_fid"] = "2202", None
        else:
            b = layers[case.b_layer]
            bi = _feature_at(b, piece)
            geom = shapely.intersection(a.geoms[ai], b.geoms[bi])
            entry["b_fid"] = bi + 1
        geom = _polygonal(geom)
        if abs(shapely.area(geom) - shapely.area(piece)) > 1e-6 * shapely.area(piece):
            raise RuntimeError(f"{case.rule}: the conflict is not the planted piece")
        entry["wkt"] = shapely.to_wkt(geom, rounding_precision=WKT_DIGITS)
        entry["area_m2"] = round(float(shapely.area(geom)), 3)
        out.append(entry)
    return out


def sites(plan: Plan, layers: dict[str, Layer]) -> dict[str, dict]:
    """The check sites with their expected answers."""
    out = {}
    for site in plan.sites:
        geom = site.geom
        lonlat = project_geometry(geom, 4548, 4326)
        entry = {
            "wkt": shapely.to_wkt(geom, rounding_precision=WKT_DIGITS),
            "geojson": json.loads(shapely.to_geojson(lonlat)),
            "area_m2": round(float(shapely.area(geom)), 3),
            "expected": site.name,
        }
        if site.name in ("clear", "straddle"):
            parcels = layers["2203"]
            hits = shapely.STRtree(parcels.geoms).query(geom, predicate="intersects")
            share = shapely.area(shapely.intersection(parcels.geoms[hits], geom)) / shapely.area(geom)
            keep = share > 1e-9
            entry["parcels"] = [
                {
                    "fid": int(i) + 1,
                    "parcel_id": parcels.columns["parcel_id"][i],
                    "land_use": parcels.columns["land_use"][i],
                    "share": round(float(s), 6),
                }
                for i, s in zip(hits[keep], share[keep], strict=True)
            ]
        if site.name == "clear":
            for code, attr in (("2102", "zone_type"), ("2304", "zone_class")):
                i = _feature_at(layers[code], geom)
                entry[f"{code}_{attr}"] = layers[code].columns[attr][i]
        if site.name == "redline":
            entry["redline_fid"] = _feature_at(layers["2301"], geom) + 1
        if site.name == "assessed":
            i = _feature_at(layers["3201"], geom)
            entry["zone_id"], entry["zone_fid"] = layers["3201"].columns["zone_id"][i], i + 1
        out[site.name] = entry
    return out
