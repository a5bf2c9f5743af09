"""Conflict rules: load and validate ``spatial/rules/conflicts.yaml``, harmonise codes, select features.

The rules file is reviewed data. Loading it checks every reference against the layer catalogue
(layers, attributes, allowed values) and against itself (schemes, unified classes, blueprint
priority) so that a bad edit fails before any overlay runs, with a one-line message naming the
rule and the problem.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from layers.catalogue import Attribute, Catalogue, Minor, YamlLoader, load_catalogue, read_yaml
from layers.errors import BlueprintError
from spatial.conflicts.terms import SEVERITIES

RULES_PATH = Path(__file__).resolve().parent.parent / "rules" / "conflicts.yaml"

OPERATIONS = ("intersection", "difference")
CONTROL_LEVELS = ("prohibited", "restricted", "conditional", "allowed", "none")

_RULE_KEYS = {"code", "name_zh", "name_en", "severity", "operation", "a", "b", "prevails", "min_area_m2"}
_RULE_OPTIONAL = {"advice_zh", "advice_en", "compare"}
_SIDE_KEYS = {"layer", "where", "scheme", "field", "classes", "exclude"}
_PRIORITY_KEYS = {"layer", "where", "scheme", "field", "unified_class", "control_level"}


class RulesError(BlueprintError, ValueError):
    """The conflict rules file is wrong; the message names the rule and the problem."""

    title = "Invalid conflict rules"


@dataclass(frozen=True)
class Scheme:
    """A harmonisation table: code prefix → class; the longest matching prefix wins."""

    name: str
    mapping: Mapping[str, str] = dataclasses.field(hash=False)

    def classify(self, code: object) -> str | None:
        """The class of one code (compared by its ``str``), None when no prefix matches.

        Examples
        --------
        >>> Scheme("s", {"11": "water", "1109": "construction"}).classify("1109")
        'construction'
        """
        text = str(code)
        for n in sorted({len(k) for k in self.mapping}, reverse=True):
            if text[:n] in self.mapping:
                return self.mapping[text[:n]]
        return None


@dataclass(frozen=True)
class Side:
    """Which features of one layer a rule side selects.

    ``where`` maps attributes to allowed values; ``scheme`` (a resolved :class:`Scheme`) harmonises
    ``field`` and only ``classes`` are kept; ``exclude`` then drops raw ``field`` values.
    """

    layer: str
    where: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: MappingProxyType({}), hash=False)
    scheme: Scheme | None = None
    field: str | None = None
    classes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Compare:
    """Intersection rules with a compare conflict only where the harmonised values differ."""

    a_field: str
    b_field: str
    via: Scheme


@dataclass(frozen=True)
class Rule:
    code: str
    name_zh: str
    name_en: str
    severity: str
    operation: str
    a: Side
    b: Side
    prevails: str
    min_area_m2: float
    advice_zh: str = ""
    advice_en: str = ""
    compare: Compare | None = None


@dataclass(frozen=True)
class PriorityEntry:
    """One entry of the blueprint priority: the first entry matching a location wins there."""

    layer: str
    control_level: str
    where: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: MappingProxyType({}), hash=False)
    unified_class: str | None = None
    scheme: Scheme | None = None
    field: str | None = None


@dataclass(frozen=True)
class RuleSet:
    """The validated rules file."""

    unified_classes: tuple[str, ...]
    schemes: Mapping[str, Scheme] = dataclasses.field(hash=False)
    rules: tuple[Rule, ...]
    priority: tuple[PriorityEntry, ...]

    def rule(self, code: str) -> Rule:
        for rule in self.rules:
            if rule.code == code:
                return rule
        raise KeyError(f"no conflict rule {code!r}")


def load_rules(path: Path | str | None = None, *, catalogue: Catalogue | None = None) -> RuleSet:
    """Read and validate a conflict rules file.

    Parameters
    ----------
    path : path-like, optional
        The YAML file; by default ``spatial/rules/conflicts.yaml``.
    catalogue : Catalogue, optional
        The layer catalogue to check references against; by default the shipped one.

    Raises
    ------
    RulesError
        The first problem found, in one line.

    Examples
    --------
    >>> rules = load_rules()
    >>> rules.rule("CT03").b.layer
    '2301'
    """
    if path is None and catalogue is None:
        return _default_rules()
    return _read(Path(path or RULES_PATH), catalogue or load_catalogue())


@lru_cache(maxsize=1)
def _default_rules() -> RuleSet:
    return _read(RULES_PATH, load_catalogue())


def _read(path: Path, catalogue: Catalogue) -> RuleSet:
    try:
        raw = read_yaml(path, _UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read rules {path}: {' '.join(str(exc).split())}") from None
    return parse_rules(raw, catalogue)


class _UniqueKeyLoader(YamlLoader):
    """A SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_rules(raw: Any, catalogue: Catalogue) -> RuleSet:
    """Validate parsed YAML into a :class:`RuleSet` (see :func:`load_rules`)."""
    if not isinstance(raw, dict):
        raise RulesError("rules file is not a mapping")
    _no_unknown_keys("rules file", raw, {"unified_classes", "harmonisation", "rules", "blueprint"})
    unified = raw.get("unified_classes")
    if not _is_str_list(unified) or not unified or len(set(unified)) != len(unified):
        raise RulesError("unified_classes must be a non-empty list of distinct names")
    schemes = _parse_schemes(raw.get("harmonisation"))
    rules = tuple(_parse_rule(i, r, schemes, unified, catalogue) for i, r in enumerate(_list(raw, "rules")))
    codes = [r.code for r in rules]
    for code in codes:
        if codes.count(code) > 1:
            raise RulesError(f"rule {code}: the code is used twice")
    blueprint = raw.get("blueprint")
    if not isinstance(blueprint, dict):
        raise RulesError("blueprint: missing or not a mapping")
    _no_unknown_keys("blueprint", blueprint, {"priority"})
    priority = tuple(
        _parse_priority(i, e, schemes, unified, catalogue) for i, e in enumerate(_list(blueprint, "priority"))
    )
    _check_priority_consistent(priority)
    return RuleSet(tuple(unified), MappingProxyType(schemes), rules, priority)


def _parse_schemes(raw: Any) -> dict[str, Scheme]:
    if not isinstance(raw, dict) or not raw:
        raise RulesError("harmonisation: missing or not a mapping of schemes")
    schemes = {}
    for name, table in raw.items():
        if not isinstance(table, dict) or not table:
            raise RulesError(f"harmonisation scheme {name}: not a non-empty mapping of code → class")
        for code, cls in table.items():
            # an unquoted 111 would be read as an integer and silently never match
            if not isinstance(code, str) or not isinstance(cls, str):
                raise RulesError(f"harmonisation scheme {name}: {code!r}: {cls!r} must be quoted strings")
        schemes[str(name)] = Scheme(str(name), MappingProxyType(dict(table)))
    return schemes


def _parse_rule(i: int, raw: Any, schemes: dict[str, Scheme], unified: list[str], catalogue: Catalogue) -> Rule:
    if not isinstance(raw, dict):
        raise RulesError(f"rule #{i + 1}: not a mapping")
    code = raw.get("code")
    if not isinstance(code, str) or not code:
        raise RulesError(f"rule #{i + 1}: missing code")
    where = f"rule {code}"
    missing = sorted(_RULE_KEYS - raw.keys())
    if missing:
        raise RulesError(f"{where}: missing {', '.join(missing)}")
    _no_unknown_keys(where, raw, _RULE_KEYS | _RULE_OPTIONAL)
    for key in ("name_zh", "name_en", "advice_zh", "advice_en"):
        if key in raw and not isinstance(raw[key], str):
            raise RulesError(f"{where}: {key} must be text")
    _one_of(where, "severity", raw["severity"], SEVERITIES)
    _one_of(where, "operation", raw["operation"], OPERATIONS)
    _one_of(where, "prevails", raw["prevails"], ("a", "b"))
    min_area = raw["min_area_m2"]
    if isinstance(min_area, bool) or not isinstance(min_area, int | float) or not min_area >= 0:
        raise RulesError(f"{where}: min_area_m2 must be a number ≥ 0, not {min_area!r}")
    a = _parse_side(f"{where}: side a", raw["a"], schemes, unified, catalogue)
    b = _parse_side(f"{where}: side b", raw["b"], schemes, unified, catalogue)
    compare = None
    if "compare" in raw:
        compare = _parse_compare(where, raw["compare"], raw["operation"], a, b, schemes, catalogue)
    return Rule(
        code=code,
        name_zh=raw["name_zh"],
        name_en=raw["name_en"],
        severity=raw["severity"],
        operation=raw["operation"],
        a=a,
        b=b,
        prevails=raw["prevails"],
        min_area_m2=float(min_area),
        advice_zh=raw.get("advice_zh", ""),
        advice_en=raw.get("advice_en", ""),
        compare=compare,
    )


def _parse_side(where: str, raw: Any, schemes: dict[str, Scheme], unified: list[str], catalogue: Catalogue) -> Side:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: not a mapping")
    _no_unknown_keys(where, raw, _SIDE_KEYS)
    minor = _polygon_layer(where, raw.get("layer"), catalogue)
    filters = _parse_where(where, raw.get("where"), minor)
    scheme, fld = _parse_scheme_field(where, raw, schemes, minor)
    classes, exclude = raw.get("classes"), raw.get("exclude")
    if classes is not None:
        if scheme is None:
            raise RulesError(f"{where}: classes need a scheme and field")
        if not _is_str_list(classes) or not classes:
            raise RulesError(f"{where}: classes must be a non-empty list")
        unknown = [c for c in classes if c not in unified]
        if unknown:
            raise RulesError(f"{where}: class {unknown[0]!r} is not one of unified_classes")
        _scheme_yields_unified(where, scheme, unified)
    elif scheme is not None:
        raise RulesError(f"{where}: scheme {scheme.name} is given but no classes to keep")
    if exclude is not None:
        if fld is None:
            raise RulesError(f"{where}: exclude needs a field")
        if not isinstance(exclude, list) or not exclude:
            raise RulesError(f"{where}: exclude must be a non-empty list")
        for value in exclude:
            _check_value(where, minor, minor.attribute(fld), value)
    return Side(minor.code, filters, scheme, fld, tuple(classes or ()), tuple(exclude or ()))


def _parse_compare(
    where: str, raw: Any, operation: str, a: Side, b: Side, schemes: dict[str, Scheme], catalogue: Catalogue
) -> Compare:
    if operation != "intersection":
        raise RulesError(f"{where}: compare only applies to intersection rules")
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: compare is not a mapping")
    _no_unknown_keys(f"{where}: compare", raw, {"a_field", "b_field", "via"})
    if raw.get("via") not in schemes:
        raise RulesError(f"{where}: compare via unknown harmonisation scheme {raw.get('via')!r}")
    via = schemes[raw["via"]]
    for side, key in ((a, "a_field"), (b, "b_field")):
        minor = catalogue.minors[side.layer]
        attr = _attribute(f"{where}: compare {key}", minor, raw.get(key))
        _scheme_covers(f"{where}: compare {key}", via, minor, attr.name)
    return Compare(raw["a_field"], raw["b_field"], via)


def _parse_priority(
    i: int, raw: Any, schemes: dict[str, Scheme], unified: list[str], catalogue: Catalogue
) -> PriorityEntry:
    where = f"blueprint priority #{i + 1}"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: not a mapping")
    where = f"{where} (layer {raw.get('layer')})"
    _no_unknown_keys(where, raw, _PRIORITY_KEYS)
    minor = _polygon_layer(where, raw.get("layer"), catalogue)
    filters = _parse_where(where, raw.get("where"), minor)
    scheme, fld = _parse_scheme_field(where, raw, schemes, minor)
    cls = raw.get("unified_class")
    if (cls is None) == (scheme is None):
        raise RulesError(f"{where}: give either unified_class or scheme and field")
    if cls is not None and cls not in unified:
        raise RulesError(f"{where}: unified_class {cls!r} is not one of unified_classes")
    if scheme is not None:
        _scheme_yields_unified(where, scheme, unified)
    _one_of(where, "control_level", raw.get("control_level"), CONTROL_LEVELS)
    return PriorityEntry(minor.code, raw["control_level"], filters, cls, scheme, fld)


def _check_priority_consistent(priority: tuple[PriorityEntry, ...]) -> None:
    """A layer may appear twice only for disjoint selections or for the same outcome."""
    for i, first in enumerate(priority):
        for later in priority[i + 1 :]:
            if later.layer != first.layer or not _filters_overlap(first.where, later.where):
                continue
            outcome = lambda e: (e.unified_class, e.scheme, e.field, e.control_level)  # noqa: E731
            if dict(first.where) == dict(later.where):
                problem = "twice" if outcome(first) == outcome(later) else "twice with contradicting entries"
                raise RulesError(f"blueprint priority: layer {first.layer} appears {problem}")
            if outcome(first) != outcome(later):
                raise RulesError(
                    f"blueprint priority: layer {first.layer} appears twice with overlapping selections "
                    "and contradicting entries"
                )


def _filters_overlap(a: Mapping[str, tuple[Any, ...]], b: Mapping[str, tuple[Any, ...]]) -> bool:
    return all(set(a[k]) & set(b[k]) for k in a.keys() & b.keys())


def _polygon_layer(where: str, code: Any, catalogue: Catalogue) -> Minor:
    if not isinstance(code, str):
        raise RulesError(f"{where}: layer must be a quoted minor class code, not {code!r}")
    minor = catalogue.minors.get(code)
    if minor is None:
        raise RulesError(f"{where}: unknown layer {code!r}")
    if minor.geometry_type != "polygon":
        raise RulesError(f"{where}: layer {code} is a {minor.geometry_type} layer; overlay needs polygons")
    return minor


def _parse_where(where: str, raw: Any, minor: Minor) -> Mapping[str, tuple[Any, ...]]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict) or not raw:
        raise RulesError(f"{where}: where must map attributes to lists of values")
    filters = {}
    for name, values in raw.items():
        attr = _attribute(f"{where}: where", minor, name)
        if not isinstance(values, list) or not values:
            raise RulesError(f"{where}: where {name} must be a non-empty list of values")
        for value in values:
            _check_value(where, minor, attr, value)
        filters[name] = tuple(values)
    return MappingProxyType(filters)


def _parse_scheme_field(
    where: str, raw: dict, schemes: dict[str, Scheme], minor: Minor
) -> tuple[Scheme | None, str | None]:
    name, fld = raw.get("scheme"), raw.get("field")
    if name is None and fld is None:
        return None, None
    if name is None or fld is None:
        raise RulesError(f"{where}: scheme and field go together")
    if name not in schemes:
        raise RulesError(f"{where}: unknown harmonisation scheme {name!r}")
    attr = _attribute(f"{where}: field", minor, fld)
    _scheme_covers(where, schemes[name], minor, attr.name)
    return schemes[name], attr.name


def _attribute(where: str, minor: Minor, name: Any) -> Attribute:
    for attr in minor.attributes:
        if attr.name == name:
            return attr
    raise RulesError(f"{where}: layer {minor.code} has no attribute {name!r}")


def _check_value(where: str, minor: Minor, attr: Attribute, value: Any) -> None:
    ok = True
    if attr.values is not None:
        ok = value in attr.values
    elif attr.type == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif attr.type == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif attr.type == "boolean":
        ok = isinstance(value, bool)
    elif attr.type == "date":
        ok = isinstance(value, date | str)
    elif attr.type == "string":
        ok = isinstance(value, str) and (attr.pattern is None or re.search(attr.pattern, value) is not None)
    if ok and attr.type in ("integer", "number"):
        ok = (attr.min is None or value >= attr.min) and (attr.max is None or value <= attr.max)
    if not ok:
        raise RulesError(f"{where}: {value!r} is not an allowed value of {minor.code}.{attr.name}")


def _scheme_covers(where: str, scheme: Scheme, minor: Minor, name: str) -> None:
    """Every allowed value of the field must harmonise, or its features would silently drop out."""
    values = next(a.values for a in minor.attributes if a.name == name)
    if values is None:
        return
    for value in values:
        if scheme.classify(value) is None:
            raise RulesError(f"{where}: {minor.code}.{name} value {value!r} has no class in scheme {scheme.name}")


def _scheme_yields_unified(where: str, scheme: Scheme, unified: list[str]) -> None:
    wrong = sorted({c for c in scheme.mapping.values() if c not in unified})
    if wrong:
        raise RulesError(f"{where}: scheme {scheme.name} yields {wrong[0]!r}, not one of unified_classes")


def _one_of(where: str, key: str, value: Any, allowed: Iterable[str]) -> None:
    if value not in allowed:
        raise RulesError(f"{where}: {key} {value!r} is not one of {', '.join(allowed)}")


def _no_unknown_keys(where: str, raw: dict, known: set[str]) -> None:
    unknown = sorted(str(k) for k in raw.keys() - known)
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r}")


def _list(raw: dict, key: str) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise RulesError(f"{key}: missing or not a non-empty list")
    return value


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
