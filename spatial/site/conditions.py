"""Planning conditions (规划条件) of a site from the regulatory-plan parcels it falls in.

Each parcel the site overlaps is listed with its share of the site; for every indicator the
binding value is the strictest across those parcels (lowest maximum, highest minimum, largest
setback), named with the parcel it comes from. Setbacks from the control lines and high-voltage
corridors come from the catalogue's ``setback_m``, with the nearest such line's distance.
"""

from __future__ import annotations

import shapely

from layers.catalogue import Catalogue
from layers.store import VersionInfo
from spatial.site.constraints import key_attributes, union_area
from spatial.site.query import Hit, covered_share, intersect, props_value
from spatial.site.rules import Indicator, SiteRules

MAX_PARCELS = 200
"""Parcels listed (largest share first); ``parcels_total`` counts them all, and every one binds."""


def planning_conditions(catalogue: Catalogue, versions: dict[str, VersionInfo], hits: dict[int, list[Hit]],
                        coverages: dict[int, shapely.Geometry], *, site: shapely.Geometry, rules: SiteRules,
                        buffered: bool = False, as_of=None) -> dict:
    """The planning conditions of ``site`` (storage CRS) from the parcels layer and the lines.

    ``buffered`` says the hits were clipped to a grown site, so they are clipped to the site again.
    """
    minor = catalogue.minor(rules.conditions_layer)
    version = versions.get(minor.code)
    site_area = float(site.area)
    out: dict = {"layer": minor.code, "version": version.version if version else None}
    if version is None:
        when = f"as of {as_of.isoformat()}" if as_of else "loaded"
        out.update(status="unknown", reason=f"no regulatory plan is {when}", reason_zh="无有效的控制性详细规划",
                   parcels=[], binding={}, setbacks=_line_setbacks(catalogue, versions, hits, coverages, site, rules))
        return out
    parcels, pieces = [], []
    for hit in hits.get(version.id, []):
        piece = intersect(hit.piece, site) if buffered else hit.piece
        area = float(shapely.area(piece))
        if area <= rules.sliver_m2:
            continue
        pieces.append(piece)
        attrs = key_attributes(minor, hit.props)
        parcels.append({"fid": hit.fid, "parcel_id": attrs.get("parcel_id"), "area_m2": round(area, 3),
                        "share": round(area / site_area, 6), "attributes": attrs})
    parcels.sort(key=lambda p: (-p["area_m2"], str(p["parcel_id"])))
    out["parcels_total"] = len(parcels)
    in_parcels = union_area(pieces)
    share_covered = covered_share(coverages.get(version.id), site)
    outside_coverage = site_area * (1 - share_covered)
    between = max(site_area - in_parcels - outside_coverage, 0.0)
    out.update(
        parcels=parcels,
        in_parcels_share=round(in_parcels / site_area, 6),
        outside_coverage_share=round(outside_coverage / site_area, 6),
        between_parcels_share=round(between / site_area, 6),
    )
    if not parcels:
        status = "unknown" if outside_coverage > rules.sliver_m2 else "none"
        reason = ("the site lies outside the regulatory plan's coverage" if status == "unknown"
                  else "the site lies in no regulatory-plan parcel (e.g. road or open land between parcels)")
        reason_zh = "用地超出控制性详细规划覆盖范围" if status == "unknown" else "用地不在任何控规地块内"
        out.update(status=status, reason=reason, reason_zh=reason_zh, binding={})
    else:
        status = "complete" if outside_coverage <= rules.sliver_m2 and between <= rules.sliver_m2 else "partial"
        binding = _binding(parcels, rules)
        out.update(status=status, binding=binding, contradictions=contradictions(binding, rules),
                   parcels=parcels[:MAX_PARCELS])
    out["setbacks"] = _line_setbacks(catalogue, versions, hits, coverages, site, rules)
    return out


def _binding(parcels: list[dict], rules: SiteRules) -> dict:
    binding = {"land_use": _land_use(parcels, rules)}
    for indicator in (*rules.indicators, rules.road_setback):
        binding[indicator.field] = _bind(indicator, parcels)
    return binding


def contradictions(binding: dict, rules: SiteRules) -> list[dict]:
    """Binding lower limits above binding upper limits (taken from different parcels)."""
    out = []
    for lower, upper in rules.consistency:
        low, high = binding.get(lower, {}).get("value"), binding.get(upper, {}).get("value")
        if low is not None and high is not None and low > high:
            a, b = binding[lower], binding[upper]
            out.append({
                "lower": lower, "upper": upper, "lower_value": low, "upper_value": high,
                "reason": f"{a['label_en']} {low:g} (parcel {a['parcel_id']}) exceeds {b['label_en']} {high:g} "
                          f"(parcel {b['parcel_id']}): no single scheme meets both; split the site or adjust the plan",
                "reason_zh": f"{a['label_zh']}{low:g}（地块{a['parcel_id']}）高于{b['label_zh']}{high:g}"
                             f"（地块{b['parcel_id']}），无法同时满足，须分宗或调整规划"})
    return out


def _land_use(parcels: list[dict], rules: SiteRules) -> dict:
    field = rules.land_use["field"]
    shares: dict[str, float] = {}
    for p in parcels:
        use = p["attributes"].get(field)
        shares[use] = shares.get(use, 0.0) + p["share"]
    head = {"label_zh": rules.land_use["label_zh"], "label_en": rules.land_use["label_en"],
            "uses": [{"value": k, "share": round(v, 6)} for k, v in sorted(shares.items(), key=lambda kv: -kv[1])]}
    if len(shares) == 1:
        use = next(iter(shares))
        return {**head, "value": use, "reason": f"all {len(parcels)} parcel(s) are {use}",
                "reason_zh": f"所涉{len(parcels)}个地块用地性质均为{use}"}
    listing = ", ".join(f"{u['value']} {u['share']:.0%}" for u in head["uses"])
    return {**head, "value": None,
            "reason": f"the site spans parcels of different uses ({listing}): each part follows its own "
                      "parcel's use; one project needs the site split or the plan adjusted",
            "reason_zh": f"用地跨越不同用地性质的地块（{listing}），须分宗或调整规划"}


def _bind(indicator: Indicator, parcels: list[dict]) -> dict:
    head = {"label_zh": indicator.label_zh, "label_en": indicator.label_en, "unit": indicator.unit,
            "bind": indicator.bind}
    values = [(props_value(p["attributes"], indicator.field), p) for p in parcels]
    values = [(float(v), p) for v, p in values if v is not None]
    if not values:
        return {**head, "value": None, "parcel_id": None, "reason": "not set by the regulatory plan",
                "reason_zh": "控规未规定"}
    pick = min if indicator.bind == "min" else max
    value = pick(v for v, _ in values)
    sources = [p for v, p in values if v == value]
    source = max(sources, key=lambda p: p["share"])
    unset = len(parcels) - len(values)
    if len(values) == 1 and not unset:
        reason = f"from parcel {source['parcel_id']}"
        reason_zh = f"取自地块{source['parcel_id']}"
    else:
        word = "lowest" if indicator.bind == "min" else "highest"
        word_zh = "最低" if indicator.bind == "min" else "最高"
        distinct = sorted({v for v, _ in values})
        listed = ", ".join(f"{v:g}" for v in distinct)
        reason = (f"the site spans {len(parcels)} parcels; the strictest ({word}) value binds: parcel "
                  f"{source['parcel_id']} ({source['share']:.0%} of the site); values {listed}")
        reason_zh = f"用地跨{len(parcels)}个地块，取最严格（{word_zh}）值，来自地块{source['parcel_id']}"
        if unset:
            reason += f"; {unset} parcel(s) do not set it"
    return {**head, "value": value, "parcel_id": source["parcel_id"], "reason": reason, "reason_zh": reason_zh}


def _line_setbacks(catalogue: Catalogue, versions: dict[str, VersionInfo], hits: dict[int, list[Hit]],
                   coverages: dict[int, shapely.Geometry], site: shapely.Geometry, rules: SiteRules) -> list[dict]:
    """Each control line's required setback and where its nearest feature is."""
    out = []
    neighbourhood = None
    for line in rules.line_setbacks:
        minor = catalogue.minor(line.layer)
        version = versions.get(line.layer)
        setback = float(minor.control.get("setback_m") or 0.0)
        row = {"layer": line.layer, "label_zh": line.label_zh, "label_en": line.label_en, "setback_m": setback,
               "version": version.version if version else None, "nearest_m": None, "nearest_fid": None}
        if version is None:
            out.append({**row, "status": "unknown", "reason": "the layer has no version"})
            continue
        near = [h for h in hits.get(version.id, []) if _matches(h.props, line.where)]
        if near:
            best = min(near, key=lambda h: h.distance_m)
            row.update(nearest_m=round(best.distance_m, 3), nearest_fid=best.fid)
            if best.distance_m == 0 and shapely.area(shapely.intersection(best.piece, site)) > rules.sliver_m2:
                status = "intersects"
            elif best.distance_m < setback:
                status = "within_setback"
            else:
                status = "beyond_setback"
        elif covered_share(coverages.get(version.id),
                           neighbourhood := neighbourhood or shapely.buffer(site, rules.nearby_m)) < 1.0:
            status = "unknown"
        else:
            status = "none_nearby"
        row["status"] = status
        row["nearby_m"] = rules.nearby_m
        out.append(row)
    return out


def _matches(props: dict, where: dict[str, tuple[str, ...]] | None) -> bool:
    if not where:
        return True
    return all(str(props_value(props, k)) in values for k, values in where.items())
