"""Per-layer constraint status (hit / clear / unknown) and the overall verdict.

A layer's status is *hit* when some part of the checked area falls under its rule (inside a
feature, within a line's setback, or — for layers like the urban development boundary — outside
every feature), *clear* when no part does and the whole area lies in the layer's coverage, and
*unknown* otherwise: outside the coverage nobody can say "clear".

Areas are allotted strictest-first within a layer, so a grade-1 water-source zone nested in a
grade-2 one counts its square metres once, as prohibited.
"""

from __future__ import annotations

import numpy as np
import shapely

from layers.catalogue import CONTROL_ORDER, Minor
from layers.store import VersionInfo
from spatial.site.query import Hit, covered_share, intersect, props_value
from spatial.site.rules import SiteRules

MAX_FEATURES = 50
"""Features listed per layer (largest overlap first); ``features_total`` gives the full count."""

RANK = {level: i for i, level in enumerate(CONTROL_ORDER)}


def feature_level(minor: Minor, props: dict) -> str:
    """The control level of one feature: by attribute value where the catalogue says so."""
    by_attr = minor.control.get("by_attribute")
    if by_attr:
        value = props_value(props, by_attr["field"])
        level = by_attr["levels"].get(str(value)) if value is not None else None
        if level:
            return level
    return minor.control_level


def key_attributes(minor: Minor, props: dict) -> dict:
    """The catalogue's attributes of a feature (extra columns a source file carried are left out)."""
    return {a.name: props_value(props, a.name) for a in minor.attributes if a.name in props}


def _area(geom: shapely.Geometry | None) -> float:
    return 0.0 if geom is None else float(shapely.area(geom))


def _union(geoms: list[shapely.Geometry]) -> shapely.Geometry | None:
    if not geoms:
        return None
    return geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)


def interiors_disjoint(geoms: list[shapely.Geometry]) -> bool:
    """Whether no two pieces share interior (touching is fine): then areas simply add up.

    Pairs whose bounding boxes do not overlap are settled without GEOS; the others take a DE-9IM
    test, several times cheaper than a polygon union. Pieces of one layer (parcels, zones) rarely
    overlap.
    """
    n = len(geoms)
    if n < 2:
        return True
    if n > 12:  # many pieces (a large site): candidate pairs from a tree, one vectorised test
        arr = np.asarray(geoms, dtype=object)
        i, j = shapely.STRtree(arr).query(arr, predicate="intersects")
        keep = i < j
        return not shapely.relate_pattern(arr[i[keep]], arr[j[keep]], "T********").any()
    bounds = shapely.bounds(np.asarray(geoms, dtype=object)).tolist()
    for i in range(n - 1):
        a = bounds[i]
        for j in range(i + 1, n):
            b = bounds[j]
            if a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]:
                continue
            if shapely.relate_pattern(geoms[i], geoms[j], "T********"):
                return False
    return True


def union_area(geoms: list[shapely.Geometry], disjoint: bool | None = None) -> float:
    """Area of the union of ``geoms``, without building it when they do not overlap."""
    if disjoint if disjoint is not None else interiors_disjoint(geoms):
        return float(shapely.area(np.asarray(geoms, dtype=object)).sum()) if geoms else 0.0
    return _area(shapely.union_all(geoms))


def unknown_entry(minor: Minor, version: VersionInfo | None, reason: str, reason_zh: str,
                  coverage_share: float | None = None) -> dict:
    return {**_head(minor, version), "status": "unknown", "reason": reason, "reason_zh": reason_zh,
            "coverage_share": coverage_share, "control_level": None, "overlap_m2": None, "share": None,
            "parts": [], "features": [], "features_total": 0}


def _head(minor: Minor, version: VersionInfo | None) -> dict:
    rule = {"level": minor.control_level, "text_zh": minor.control.get("text_zh"),
            "text_en": minor.control.get("text_en")}
    if minor.control.get("setback_m") is not None:
        rule["setback_m"] = minor.control["setback_m"]
    return {"layer": minor.code, "name_zh": minor.name_zh, "name_en": minor.name_en,
            "version": version.version if version else None, "rule": rule}


def no_version(minor: Minor, version: VersionInfo | None, as_of) -> dict | None:
    if version is not None:
        return None
    when = f"as of {as_of.isoformat()}" if as_of else "loaded"
    when_zh = f"{as_of.isoformat()}时无有效版本" if as_of else "尚未入库"
    return unknown_entry(minor, None, f"the layer has no version {when}", f"该图层{when_zh}")


def evaluate_vector(minor: Minor, version: VersionInfo | None, hits: list[Hit], *, checked: shapely.Geometry,
                    coverage: shapely.Geometry | None, rules: SiteRules, clipped: bool = True,
                    share_covered: float | None = None, as_of=None) -> dict:
    """The status of one polygon layer for the checked area.

    ``clipped`` says whether the hits' pieces are already clipped to ``checked`` (area layers) or
    only to the reach box around it (layers with setbacks). ``share_covered`` is the share of the
    checked area inside ``coverage``, when the caller already knows it.
    """
    missing = no_version(minor, version, as_of)
    if missing:
        return missing
    checked_area = float(checked.area)
    if share_covered is None:
        share_covered = covered_share(coverage, checked)
    uncovered_m2 = checked_area * (1.0 - share_covered)
    setback_m = float(minor.control.get("setback_m") or 0.0)
    sliver = rules.sliver_m2
    outside_rule = rules.outside.get(minor.code)
    if not hits and not outside_rule:  # the common case: nothing there
        entry = {**_head(minor, version), "coverage_share": round(share_covered, 6), "overlap_m2": 0.0,
                 "share": 0.0, "parts": [], "features": [], "features_total": 0}
        return _status(entry, [], uncovered_m2, share_covered, sliver)

    by_level: dict[tuple[str, str], list[shapely.Geometry]] = {}
    features, everything = [], []
    for hit in hits:
        inside = hit.piece if clipped else intersect(hit.piece, checked)
        inside_m2 = _area(inside)
        level = feature_level(minor, hit.props)
        if level == "none":  # this feature's attribute value puts it under no control
            everything.append(inside)
            continue
        strip_m2 = 0.0
        if setback_m > 0 and shapely.dwithin(hit.piece, checked, setback_m):
            strip = shapely.difference(shapely.intersection(shapely.buffer(hit.piece, setback_m, quad_segs=8),
                                                            checked), inside)
            strip_m2 = _area(strip)
            if strip_m2 > sliver:
                by_level.setdefault((rules.setback["level"], "setback"), []).append(strip)
        if inside_m2 > 0:
            everything.append(inside)
        if inside_m2 > sliver:
            by_level.setdefault((level, "inside"), []).append(inside)
        if inside_m2 > sliver or strip_m2 > sliver:
            feature = {"fid": hit.fid, "level": level, "overlap_m2": round(inside_m2, 3),
                       "share": round(inside_m2 / checked_area, 6), "attributes": key_attributes(minor, hit.props)}
            if strip_m2 > sliver:
                feature["setback_m2"] = round(strip_m2, 3)
            if hit.distance_m > 0:
                feature["distance_m"] = round(hit.distance_m, 3)
            features.append(feature)
    if outside_rule:
        in_coverage = checked if share_covered >= 1.0 else shapely.intersection(checked, coverage)
        outside = shapely.difference(in_coverage, _union(everything)) if everything else in_coverage
        if _area(outside) > sliver:
            by_level.setdefault((outside_rule["level"], "outside"), []).append(outside)

    inside_disjoint = interiors_disjoint(everything)
    only_inside = all(relation == "inside" for _, relation in by_level)
    parts = _allot(by_level, minor, checked_area, rules, outside_rule,
                   disjoint=inside_disjoint if only_inside else None)
    overlap = union_area(everything, inside_disjoint)
    features.sort(key=lambda f: (-f["overlap_m2"], f.get("distance_m", 0.0)))
    entry = {**_head(minor, version), "coverage_share": round(share_covered, 6),
             "overlap_m2": round(overlap, 3), "share": round(overlap / checked_area, 6), "parts": parts,
             "features": features[:MAX_FEATURES], "features_total": len(features)}
    return _status(entry, parts, uncovered_m2, share_covered, sliver)


def _status(entry: dict, parts: list[dict], uncovered_m2: float, share_covered: float, sliver: float) -> dict:
    if parts:
        entry.update(status="hit", control_level=min((p["level"] for p in parts), key=RANK.__getitem__))
    elif uncovered_m2 > sliver:
        entry.update(status="unknown", control_level=None,
                     reason=f"{1 - share_covered:.1%} of the checked area lies outside the layer's coverage",
                     reason_zh=f"{1 - share_covered:.1%}的用地超出该图层覆盖范围")
    else:
        entry.update(status="clear", control_level=None)
    return entry


def _allot(by_level: dict, minor: Minor, checked_area: float, rules: SiteRules,
           outside_rule: dict | None, disjoint: bool | None = None) -> list[dict]:
    """Each square metre once, at its strictest level; one part per (level, relation).

    ``disjoint`` says the pieces are known not to overlap (then areas add up).
    """
    parts, taken = [], None
    groups = sorted(by_level.items(), key=lambda kv: (RANK[kv[0][0]], kv[0][1]))
    if disjoint is None:
        disjoint = interiors_disjoint([g for _, geoms in groups for g in geoms])
    for (level, relation), geoms in groups:
        if disjoint:  # nothing to take away from anything: areas add up
            area = float(sum(_area(g) for g in geoms))
        else:
            geom = _union(geoms)
            if taken is not None:
                geom = shapely.difference(geom, taken)
            area = _area(geom)
            taken = geom if taken is None else shapely.union(taken, geom)
        if area <= rules.sliver_m2:
            continue
        if relation == "setback":
            fmt = {"name_zh": minor.name_zh, "name_en": minor.name_en.lower(),
                   "setback_m": f"{float(minor.control['setback_m']):g}"}
            text_zh, text_en = rules.setback["text_zh"].format(**fmt), rules.setback["text_en"].format(**fmt)
        elif relation == "outside":
            text_zh, text_en = outside_rule["text_zh"], outside_rule["text_en"]
        else:
            text_zh, text_en = minor.control.get("text_zh"), minor.control.get("text_en")
        part = {"level": level, "relation": relation, "area_m2": round(area, 3), "share": round(area / checked_area, 6)}
        if relation != "inside":  # inside a feature the layer's own rule applies: it is in ``rule``
            part.update(text_zh=text_zh, text_en=text_en)
        parts.append(part)
    return parts


def evaluate_raster(minor: Minor, version: VersionInfo | None, stats, *, checked_area: float,
                    threshold: float, rules: SiteRules, as_of=None) -> dict:
    """The status of a raster constraint (e.g. slope above 25°) from its zonal statistics."""
    missing = no_version(minor, version, as_of)
    if missing:
        return missing
    above = stats.above.get(threshold, 0.0)
    entry = {**_head(minor, version), "coverage_share": round(stats.data_share, 6),
             "overlap_m2": round(above, 3), "share": round(above / checked_area, 6), "parts": [],
             "features": [], "features_total": 0, "threshold": threshold}
    if above > rules.sliver_m2:
        entry["parts"] = [{"level": minor.control_level, "relation": "above", "area_m2": round(above, 3),
                           "share": round(above / checked_area, 6)}]
        entry.update(status="hit", control_level=minor.control_level)
    elif stats.nodata_m2 > rules.sliver_m2:
        entry.update(status="unknown", control_level=None,
                     reason=f"{1 - stats.data_share:.1%} of the checked area has no raster data",
                     reason_zh=f"{1 - stats.data_share:.1%}的用地无栅格数据")
    else:
        entry.update(status="clear", control_level=None)
    return entry


def verdict(entries: list[dict], *, rules: SiteRules) -> dict:
    """The overall verdict: the strictest level that applies, with its reasons by severity.

    Layers that could not answer make the verdict at least ``rules.unknown_level`` and are listed
    as reasons to confirm: an incomplete check never reads as "allowed".
    """
    reasons = []
    for entry in entries:
        if entry["status"] == "hit":
            for part in entry["parts"]:
                reasons.append({"level": part["level"], "relation": part["relation"], "layer": entry["layer"],
                                "name_zh": entry["name_zh"], "name_en": entry["name_en"],
                                "area_m2": part["area_m2"], "share": part["share"],
                                "text_zh": part.get("text_zh", entry["rule"]["text_zh"]),
                                "text_en": part.get("text_en", entry["rule"]["text_en"])})
        elif entry["status"] == "unknown":
            reasons.append({"level": rules.unknown_level, "relation": "unknown", "layer": entry["layer"],
                            "name_zh": entry["name_zh"], "name_en": entry["name_en"], "area_m2": None,
                            "share": None, "text_zh": f"须向主管部门核实：{entry['reason_zh']}",
                            "text_en": f"to be confirmed with the owner: {entry['reason']}"})
    reasons.sort(key=lambda r: (RANK[r["level"]], r["relation"] == "unknown", -(r["share"] or 0), r["layer"]))
    unknown = [e["layer"] for e in entries if e["status"] == "unknown"]
    binding = [r for r in reasons if r["level"] != "none"]
    level = binding[0]["level"] if binding else "allowed"
    return {"level": level, "complete": not unknown, "unknown_layers": unknown,
            "hits": sum(e["status"] == "hit" for e in entries),
            "clear": sum(e["status"] == "clear" for e in entries), "unknown": len(unknown),
            "reasons": reasons}
