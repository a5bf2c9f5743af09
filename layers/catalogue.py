"""The thematic-layer catalogue: load catalogue.yaml, validate it, answer questions about it.

The catalogue is reviewed data (``catalogue.yaml`` beside this module); code reads it and never
repeats it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from layers.errors import CatalogueError, NotFound

T = TypeVar("T")

CATALOGUE_PATH = Path(__file__).with_name("catalogue.yaml")
SCHEMA_PATH = Path(__file__).with_name("catalogue.schema.json")

CONTROL_ORDER = ("prohibited", "restricted", "conditional", "allowed", "none")
"""Control levels from strictest to none; an index in this tuple is a severity rank."""


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str
    required: bool = False
    values: tuple | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class Minor:
    """One minor class: one thematic layer."""

    code: str
    name_zh: str
    name_en: str
    geometry_type: str
    source_plan: str
    owner: str
    control: dict
    style: dict
    attributes: tuple[Attribute, ...]
    middle_code: str
    major_code: str
    assessment_type: str | None = None
    raster: dict | None = None

    @property
    def control_level(self) -> str:
        return self.control["level"]

    @property
    def constrains(self) -> bool:
        """Whether a hit on this layer constrains development (site checks report it).

        ``control.constrains`` in the catalogue when given (the urban development boundary and the
        regulatory-plan parcels are "allowed" yet bind a site), else whether any control level, the
        layer's or one by attribute, is stricter than "allowed".
        """
        if "constrains" in self.control:
            return self.control["constrains"]
        levels = {self.control_level, *self.control.get("by_attribute", {}).get("levels", {}).values()}
        return bool(levels - {"none", "allowed"})

    def attribute(self, name: str) -> Attribute:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise NotFound(f"layer {self.code} has no attribute {name!r}")

    def summary(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "geometry_type": self.geometry_type,
            "control_level": self.control_level,
            "source_plan": self.source_plan,
            "owner": self.owner,
            "style": self.style,
            "attributes": [
                {k: v for k, v in attr.__dict__.items() if v is not None} for attr in self.attributes
            ],
        }


@dataclass(frozen=True)
class Catalogue:
    """The validated catalogue: the raw hierarchy plus an index of minor classes by code."""

    raw: dict
    minors: dict[str, Minor] = field(repr=False)

    def minor(self, code: str) -> Minor:
        try:
            return self.minors[str(code)]
        except KeyError:
            raise NotFound(f"unknown layer code {code!r} (see `blueprint catalogue list`)") from None

    def hierarchy(self) -> list[dict[str, Any]]:
        """The 4/11/40+ hierarchy as plain data: majors → middles → minor summaries."""
        return [
            {
                "code": major["code"],
                "name_zh": major["name_zh"],
                "name_en": major["name_en"],
                "middles": [
                    {
                        "code": middle["code"],
                        "name_zh": middle["name_zh"],
                        "name_en": middle["name_en"],
                        "minors": [self.minors[m["code"]].summary() for m in middle["minors"]],
                    }
                    for middle in major["middles"]
                ],
            }
            for major in self.raw["majors"]
        ]

    def counts(self) -> tuple[int, int, int]:
        majors = self.raw["majors"]
        middles = [mid for major in majors for mid in major["middles"]]
        return len(majors), len(middles), len(self.minors)


def validate_catalogue(raw: dict) -> Catalogue:
    """Check a parsed catalogue against the JSON Schema and the cross-field rules.

    Raises
    ------
    CatalogueError
        With a one-line message naming the first problem found.
    """
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(raw), key=lambda e: e.path)
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        raise CatalogueError(f"catalogue invalid at {where}: {err.message}")

    minors: dict[str, Minor] = {}
    for major in raw["majors"]:
        for middle in major["middles"]:
            if not middle["code"].startswith(major["code"]):
                raise CatalogueError(f"middle {middle['code']} is not under major {major['code']}")
            for m in middle["minors"]:
                code = m["code"]
                if not code.startswith(middle["code"]):
                    raise CatalogueError(f"minor {code} is not under middle {middle['code']}")
                if code in minors:
                    raise CatalogueError(f"minor code {code} is used twice")
                attrs = tuple(Attribute(**a) for a in m["attributes"])
                _check_attributes(code, attrs, m)
                minors[code] = Minor(
                    code=code,
                    name_zh=m["name_zh"],
                    name_en=m["name_en"],
                    geometry_type=m["geometry_type"],
                    source_plan=m["source_plan"],
                    owner=m["owner"],
                    control=m["control"],
                    style=m["style"],
                    attributes=attrs,
                    middle_code=middle["code"],
                    major_code=major["code"],
                    assessment_type=m.get("assessment_type"),
                    raster=m.get("raster"),
                )
    return Catalogue(raw=raw, minors=minors)


def _check_attributes(code: str, attrs: tuple[Attribute, ...], minor: dict) -> None:
    names = [a.name for a in attrs]
    if len(set(names)) != len(names):
        raise CatalogueError(f"layer {code}: an attribute name is used twice")
    for attr in attrs:
        if attr.min is not None and attr.max is not None and attr.min > attr.max:
            raise CatalogueError(f"layer {code}.{attr.name}: min is above max")
        if attr.pattern is not None:
            try:
                re.compile(attr.pattern)
            except re.error as exc:
                raise CatalogueError(f"layer {code}.{attr.name}: bad pattern ({exc})") from None
    by_attr = minor["control"].get("by_attribute")
    if by_attr:
        if by_attr["field"] not in names:
            raise CatalogueError(f"layer {code}: control by unknown attribute {by_attr['field']!r}")
        allowed = next(a.values for a in attrs if a.name == by_attr["field"])
        unknown = set(by_attr["levels"]) - {str(v) for v in (allowed or ())}
        if allowed and unknown:
            raise CatalogueError(f"layer {code}: control names unknown values {sorted(unknown)}")
    if minor["geometry_type"] == "raster" and attrs:
        raise CatalogueError(f"layer {code}: a raster layer has no attributes")


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Read and validate a catalogue file (default: the one shipped beside this module)."""
    if path is None:
        return _default_catalogue()
    return _read(path)


@lru_cache(maxsize=1)
def _default_catalogue() -> Catalogue:
    return _read(CATALOGUE_PATH)


# libyaml's parser where PyYAML was built with it: the catalogue parsed in 12-15 ms instead of
# 80-160 ms (measured ad hoc, twice, on the 2-core VM).
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path, loader: type = YamlLoader) -> Any:
    """A YAML file's data (safe types only); raises ``OSError`` or ``yaml.YAMLError``."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=loader)


def _read(path: Path) -> Catalogue:
    try:
        raw = read_yaml(path)
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"cannot read catalogue {path}: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise CatalogueError(f"catalogue {path} is not a mapping")
    return validate_catalogue(raw)


def load_rules_file(path: Path, what: str, validate: Callable[[dict, Catalogue], T]) -> T:
    """Read a YAML rules file and check it against the catalogue; any mistake is one
    ``CatalogueError`` line naming the file (``what`` says which rules, e.g. "site rules")."""
    try:
        return validate(read_yaml(path), load_catalogue())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"cannot read {what} {path}: {exc}".splitlines()[0]) from None
    except (KeyError, TypeError, ValueError, NotFound) as exc:
        raise CatalogueError(f"{what} {Path(path).name} invalid: {exc}") from None
