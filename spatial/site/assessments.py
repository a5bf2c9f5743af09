"""Which regional assessments (区域评估) cover a site, so the project need not commission them.

A type is covered when the site lies entirely inside a zone whose stored result for that type is
pass or conditional and valid on the date. Otherwise the type is listed as not covered, with why.
"""

from __future__ import annotations

import datetime as dt

from layers.catalogue import Catalogue
from layers.store import VersionInfo
from spatial.site.query import Hit, props_value

USABLE = ("pass", "conditional")


def assessment_layers(catalogue: Catalogue) -> list:
    """The catalogue's assessment-result layers, by code."""
    return sorted((m for m in catalogue.minors.values() if m.assessment_type), key=lambda m: m.code)


def assessment_coverage(catalogue: Catalogue, versions: dict[str, VersionInfo], hits: dict[int, list[Hit]], *,
                        on: dt.date, not_assessable: dict[str, dict] | None = None) -> dict:
    """``{"on": date, "covered": [...], "not_covered": [...]}`` for every assessment type.

    ``not_assessable`` gives, by type, why a type cannot be assessed regionally at all (``en``/``zh``).
    """
    not_assessable = not_assessable or {}
    covered, not_covered = [], []
    for minor in assessment_layers(catalogue):
        head = {"type": minor.assessment_type, "layer": minor.code, "name_zh": minor.name_zh,
                "name_en": minor.name_en}
        version = versions.get(minor.code)
        if version is None:
            why = not_assessable.get(minor.assessment_type)
            not_covered.append({**head, "version": None,
                                "reason": f"not assessed regionally: {why['en']}" if why else
                                "no regional assessment results are stored",
                                "reason_zh": f"不开展区域评估：{why['zh']}" if why else "无区域评估成果"})
            continue
        head["version"] = version.version
        found = hits.get(version.id, [])
        good = [h for h in found if h.covers_site and _valid(h.props, on)
                and props_value(h.props, "result") in USABLE]
        if good:
            best = max(good, key=lambda h: (props_value(h.props, "result") == "pass", str(h.props.get("valid_to"))))
            covered.append({**head, "zone_id": best.props.get("zone_id"), "result": best.props.get("result"),
                            "valid_from": best.props.get("valid_from"), "valid_to": best.props.get("valid_to"),
                            "conditions": _conditions(best.props.get("conditions"))})
            continue
        not_covered.append({**head, **_why_not(found, on)})
    return {"on": on.isoformat(), "covered": covered, "not_covered": not_covered}


def _valid(props: dict, on: dt.date) -> bool:
    try:
        start = dt.date.fromisoformat(str(props.get("valid_from"))[:10])
        end = dt.date.fromisoformat(str(props.get("valid_to"))[:10])
    except ValueError:
        return False
    return start <= on <= end


def _conditions(text) -> list[str]:
    if not text:
        return []
    return [line for line in str(text).splitlines() if line.strip()]


def _why_not(found: list[Hit], on: dt.date) -> dict:
    inside = [h for h in found if h.covers_site]
    failed = [h for h in inside if props_value(h.props, "result") == "fail" and _valid(h.props, on)]
    if failed:
        zone = failed[0].props.get("zone_id")
        return {"zone_id": zone, "reason": f"zone {zone}'s assessment failed: the project needs its own",
                "reason_zh": f"评估区域{zone}评估结论为不通过，项目须单独评估"}
    if inside:
        h = inside[0]
        zone = h.props.get("zone_id")
        return {"zone_id": zone,
                "reason": f"zone {zone}'s result is valid {h.props.get('valid_from')} to {h.props.get('valid_to')}, "
                          f"not on {on.isoformat()}",
                "reason_zh": f"评估区域{zone}的成果有效期为{h.props.get('valid_from')}至"
                             f"{h.props.get('valid_to')}，不含该日期"}
    if found:
        zone = found[0].props.get("zone_id")
        return {"zone_id": zone, "reason": f"the site extends beyond assessed zone {zone}",
                "reason_zh": f"用地超出评估区域{zone}范围"}
    return {"zone_id": None, "reason": "no assessed zone contains the site", "reason_zh": "用地不在已评估区域内"}
