"""The site-check rules (``spatial/rules/site.yaml``), validated against the catalogue on load."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from layers.catalogue import CONTROL_ORDER, Catalogue, load_rules_file

RULES_PATH = Path(__file__).resolve().parents[1] / "rules" / "site.yaml"
BINDS = ("min", "max")


@dataclass(frozen=True)
class Indicator:
    """A planning indicator of the regulatory-plan parcels and how it binds across parcels."""

    field: str
    bind: str
    unit: str
    label_zh: str
    label_en: str


@dataclass(frozen=True)
class LineSetback:
    layer: str
    where: dict[str, tuple[str, ...]] | None
    label_zh: str
    label_en: str


@dataclass(frozen=True)
class SiteRules:
    sliver_m2: float
    unknown_level: str
    nearby_m: float
    setback: dict[str, str]
    outside: dict[str, dict[str, str]]
    rasters: dict[str, dict[str, Any]]
    terrain: dict[str, str]
    conditions_layer: str
    land_use: dict[str, str]
    indicators: tuple[Indicator, ...]
    road_setback: Indicator
    line_setbacks: tuple[LineSetback, ...]
    consistency: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=4)
def load_site_rules(path: Path = RULES_PATH) -> SiteRules:
    """Read and check the rules; a mistake is a one-line ``CatalogueError`` naming it."""
    return load_rules_file(path, "site rules", _validate)


def _level(value: str, where: str) -> str:
    if value not in CONTROL_ORDER:
        raise ValueError(f"{where}: unknown control level {value!r}")
    return value


def _indicator(raw: dict, catalogue: Catalogue, layer: str) -> Indicator:
    catalogue.minor(layer).attribute(raw["field"])
    if raw["bind"] not in BINDS:
        raise ValueError(f"indicator {raw['field']}: bind must be min or max")
    return Indicator(raw["field"], raw["bind"], str(raw.get("unit", "")), raw["label_zh"], raw["label_en"])


def _validate(raw: dict, catalogue: Catalogue) -> SiteRules:
    outside = {}
    for code, rule in raw.get("outside", {}).items():
        catalogue.minor(code)
        outside[str(code)] = {"level": _level(rule["level"], f"outside {code}"),
                              "text_zh": rule["text_zh"], "text_en": rule["text_en"]}
    rasters = {}
    for code, rule in raw.get("rasters", {}).items():
        minor = catalogue.minor(code)
        if minor.geometry_type != "raster":
            raise ValueError(f"rasters: layer {code} is not a raster layer")
        threshold = (minor.raster or {}).get(rule["threshold_from"])
        if not isinstance(threshold, int | float):
            raise ValueError(f"rasters {code}: the catalogue has no raster.{rule['threshold_from']}")
        rasters[str(code)] = {"threshold": float(threshold), "classes": [float(c) for c in rule["classes"]]}
    for minor in catalogue.minors.values():
        if minor.geometry_type == "raster" and minor.constrains and minor.code not in rasters:
            raise ValueError(f"raster layer {minor.code} constrains development but has no entry under rasters")
    terrain = {str(k): str(v) for k, v in raw["terrain"].items()}
    for code in terrain.values():
        if catalogue.minor(code).geometry_type != "raster":
            raise ValueError(f"terrain: layer {code} is not a raster layer")
    cond = raw["conditions"]
    layer = str(cond["layer"])
    catalogue.minor(layer).attribute(cond["land_use"]["field"])
    lines = []
    for item in cond["line_setbacks"]:
        minor = catalogue.minor(item["layer"])
        where = None
        if item.get("where"):
            where = {name: tuple(str(v) for v in values) for name, values in item["where"].items()}
            for name, values in where.items():
                allowed = minor.attribute(name).values
                if allowed is not None and set(values) - {str(v) for v in allowed}:
                    raise ValueError(f"line setback {item['layer']}: unknown {name} values {values}")
        lines.append(LineSetback(str(item["layer"]), where, item["label_zh"], item["label_en"]))
    setback = raw["setback"]
    return SiteRules(
        sliver_m2=float(raw["sliver_m2"]),
        unknown_level=_level(raw["unknown_level"], "unknown_level"),
        nearby_m=float(raw["nearby_m"]),
        setback={"level": _level(setback["level"], "setback"), "text_zh": setback["text_zh"],
                 "text_en": setback["text_en"]},
        outside=outside,
        rasters=rasters,
        terrain=terrain,
        conditions_layer=layer,
        land_use=dict(cond["land_use"]),
        indicators=tuple(_indicator(i, catalogue, layer) for i in cond["indicators"]),
        road_setback=_indicator(cond["road_setback"], catalogue, layer),
        line_setbacks=tuple(lines),
        consistency=_pairs(cond.get("consistency") or [], cond["indicators"]),
    )


def _pairs(raw: list[dict], indicators: list[dict]) -> tuple[tuple[str, str], ...]:
    fields = {i["field"] for i in indicators}
    pairs = tuple((p["lower"], p["upper"]) for p in raw)
    for lower, upper in pairs:
        if lower not in fields or upper not in fields:
            raise ValueError(f"consistency names an indicator that is not listed: {lower}, {upper}")
    return pairs
