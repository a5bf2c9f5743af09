import copy

import pytest
import yaml

from layers.catalogue import CATALOGUE_PATH, load_catalogue, validate_catalogue
from layers.errors import CatalogueError, NotFound

CONSTRAINING = {"1103", "1302", "1303", "1304", "1305", "2102", "2103", "2202", "2203", "2204", "2205", "2206",
                "2207", "2301", "2302", "2303", "2304", "2401", "2402", "2403", "2404", "2501", "2502", "2503",
                "2504"}
"""The classes whose hits constrain development, as the code derived them before the catalogue said so."""


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CATALOGUE_PATH.read_text(encoding="utf-8"))


def test_counts_are_4_11_and_at_least_40():
    majors, middles, minors = load_catalogue().counts()
    assert (majors, middles) == (4, 11)
    assert minors >= 40


def test_every_minor_has_the_required_fields():
    for minor in load_catalogue().minors.values():
        assert minor.code.startswith(minor.middle_code)
        assert minor.name_zh and minor.name_en and minor.owner and minor.source_plan
        assert minor.geometry_type in {"polygon", "line", "point", "raster"}
        assert minor.control_level in {"prohibited", "restricted", "conditional", "allowed", "none"}
        assert minor.style["color"].startswith("#")


def test_hierarchy_shape():
    hierarchy = load_catalogue().hierarchy()
    assert [m["code"] for m in hierarchy] == ["1", "2", "3", "4"]
    minor = hierarchy[1]["middles"][2]["minors"][0]
    assert minor["code"] == "2301" and minor["name_zh"] == "生态保护红线"
    assert minor["geometry_type"] == "polygon" and minor["control_level"] == "prohibited"


def test_unknown_code_is_not_found():
    with pytest.raises(NotFound, match="unknown layer code"):
        load_catalogue().minor("9999")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["majors"][0]["middles"][0]["minors"][0].pop("owner"), "owner"),
        (lambda r: r["majors"][0]["middles"][0]["minors"][0].update(geometry_type="blob"), "blob"),
        (lambda r: r["majors"][0]["middles"][0]["minors"][1].update(code="1101"), "used twice"),
        (lambda r: r["majors"][0]["middles"][0]["minors"][0].update(code="2199"), "not under middle"),
        (lambda r: r["majors"][1]["middles"][2]["minors"][0]["control"].pop("text_zh"), "text_zh"),
        (lambda r: r["majors"][0]["middles"][0]["minors"][0]["control"].update(constrains="yes"), "constrains"),
    ],
)
def test_invalid_catalogues_are_rejected(raw, mutate, message):
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(CatalogueError, match=message):
        validate_catalogue(broken)


def test_control_by_unknown_value_is_rejected(raw):
    broken = copy.deepcopy(raw)
    water = broken["majors"][1]["middles"][2]["minors"][1]
    assert water["code"] == "2302"
    water["control"]["by_attribute"]["levels"]["grade-9"] = "prohibited"
    with pytest.raises(CatalogueError, match="unknown values"):
        validate_catalogue(broken)


def minor_raw(raw: dict, code: str) -> dict:
    return next(m for major in raw["majors"] for middle in major["middles"] for m in middle["minors"]
                if m["code"] == code)


def test_constraining_classes_are_unchanged():
    assert {m.code for m in load_catalogue().minors.values() if m.constrains} == CONSTRAINING


def test_constrains_is_read_from_the_catalogue(raw):
    edited = copy.deepcopy(raw)
    minor_raw(edited, "2202")["control"].pop("constrains")  # allowed, so derived: not constraining
    minor_raw(edited, "1101")["control"]["constrains"] = True  # none, but said to constrain
    minor_raw(edited, "2301")["control"]["constrains"] = False  # prohibited, but said not to
    minors = validate_catalogue(edited).minors
    assert {code for code, m in minors.items() if m.constrains} == CONSTRAINING - {"2202", "2301"} | {"1101"}
