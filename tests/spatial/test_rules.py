"""Loading and validating the conflict rules file; harmonisation and feature selection."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spatial.conflicts.rules import RULES_PATH, RulesError, load_rules
from spatial.conflicts.selection import harmonise, select

RAW = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))


def rule(raw: dict, code: str) -> dict:
    return next(r for r in raw["rules"] if r["code"] == code)


def test_shipped_rules_load():
    rules = load_rules()
    assert [r.code for r in rules.rules] == [f"CT{i:02d}" for i in range(1, 14)]
    assert rules.unified_classes == ("construction", "agricultural", "ecological", "water", "other")
    ct05 = rules.rule("CT05")
    assert (ct05.a.layer, ct05.b.layer, dict(ct05.b.where)) == ("2201", "2401", {"grade": ("I", "II")})
    assert ct05.a.scheme.name == "gb50137" and ct05.a.classes == ("construction",)
    assert rules.rule("CT08").operation == "difference" and rules.rule("CT08").a.exclude == ("H2", "H3")
    assert rules.rule("CT09").compare.via.name == "gb50137_major"
    assert [e.layer for e in rules.priority] == ["2301", "2103", "2302", "2401", "2402", "2201", "2104"]
    assert rules.priority[5].scheme.name == "gb50137" and rules.priority[0].unified_class == "ecological"
    with pytest.raises(KeyError):
        rules.rule("CT99")


def test_harmonise_longest_prefix_wins():
    scheme = load_rules().schemes["gbt21010"]
    codes = ["0101", "1101", "1109", "1202", "1206", "05H1", "9999", None, "11"]
    want = ["agricultural", "water", "construction", "agricultural", "other", "construction", None, None, "water"]
    assert harmonise(codes, scheme).tolist() == want
    # any array-like: a pandas Series with its own index, numpy, integers compared as text
    series = pd.Series(["R2", "E1", "E2", "H3"], index=[10, 11, 12, 13])
    want = ["construction", "water", "agricultural", "construction"]
    assert harmonise(series, load_rules().schemes["gb50137"]).tolist() == want
    assert harmonise(np.array([111, 211, 312]), {"111": "a", "21": "c", "3": "w"}).tolist() == ["a", "c", "w"]
    assert harmonise([], {"1": "x"}).tolist() == []


def test_select_applies_where_classes_and_exclude():
    rules = load_rules()
    plan = pd.DataFrame({"ydlb": ["R2", "H2", "H3", "E2", "M1", "E1", "G1"]})
    assert select(plan, rules.rule("CT08").a).tolist() == [True, False, False, False, True, False, True]
    assert select(plan, rules.rule("CT01").a).tolist() == [True, True, True, False, True, False, True]
    land = pd.DataFrame({"ghdl": ["111", "211", "222", "312", "311", None]})
    assert select(land, rules.rule("CT01").b).tolist() == [True, False, False, True, True, False]
    forest = pd.DataFrame({"grade": ["I", "II", "III", "IV"]})
    assert select(forest, rules.rule("CT05").b).tolist() == [True, True, False, False]
    assert select(forest, rules.rule("CT10").b).tolist() == [True] * 4
    with pytest.raises(ValueError, match="layer 2401 have no column 'grade'"):
        select(pd.DataFrame({"x": [1]}), rules.rule("CT05").b)


def _set(path: list, value: object) -> Callable[[dict], None]:
    def apply(raw: dict) -> None:
        node = raw
        for key in path[:-1]:
            node = rule(raw, key) if isinstance(key, str) and key.startswith("CT") else node[key]
        node[path[-1]] = value

    return apply


def _drop(path: list) -> Callable[[dict], None]:
    def apply(raw: dict) -> None:
        node = raw
        for key in path[:-1]:
            node = rule(raw, key) if isinstance(key, str) and key.startswith("CT") else node[key]
        del node[path[-1]]

    return apply


def _duplicate_rule(raw: dict) -> None:
    raw["rules"].append(copy.deepcopy(raw["rules"][0]))


def _append_priority(entry: dict) -> Callable[[dict], None]:
    return lambda raw: raw["blueprint"]["priority"].append(entry)


INVALID = {
    "unknown layer": (_set(["CT03", "b", "layer"], "2399"), r"rule CT03: side b: unknown layer '2399'"),
    "unquoted layer": (_set(["CT03", "b", "layer"], 2301), r"rule CT03: side b: layer must be a quoted"),
    "line layer": (_set(["CT03", "b", "layer"], "1104"), r"rule CT03: side b: layer 1104 is a line layer"),
    "unknown where attribute": (
        _set(["CT05", "b", "where"], {"level": ["I"]}),
        r"rule CT05: side b: where: layer 2401 has no attribute 'level'",
    ),
    "value not allowed": (
        _set(["CT05", "b", "where"], {"grade": ["I", "V"]}),
        r"rule CT05: side b: 'V' is not an allowed value of 2401.grade",
    ),
    "where value of the wrong type": (
        _set(["CT07", "b", "where"], {"grade": [1]}),
        r"rule CT07: side b: 1 is not an allowed value of 2302.grade",
    ),
    "unknown scheme": (
        _set(["CT01", "a", "scheme"], "gb50137_2024"),
        r"rule CT01: side a: unknown harmonisation scheme",
    ),
    "unknown field": (
        _set(["CT01", "a", "field"], "land_use"),
        r"rule CT01: side a: field: layer 2201 has no attribute",
    ),
    "scheme without field": (_drop(["CT01", "a", "field"]), r"rule CT01: side a: scheme and field go together"),
    "classes without scheme": (
        _set(["CT03", "b", "classes"], ["ecological"]),
        r"rule CT03: side b: classes need a scheme and field",
    ),
    "scheme without classes": (_drop(["CT01", "a", "classes"]), r"rule CT01: side a: scheme gb50137 is given but no"),
    "class not unified": (
        _set(["CT01", "a", "classes"], ["urban"]),
        r"rule CT01: side a: class 'urban' is not one of unified_classes",
    ),
    "exclude value not allowed": (
        _set(["CT08", "a", "exclude"], ["H9"]),
        r"rule CT08: side a: 'H9' is not an allowed value of 2201.ydlb",
    ),
    "field value without class": (
        _drop(["harmonisation", "gb50137", "E9"]),
        r"rule CT01: side a: 2201.ydlb value 'E9' has no class in scheme gb50137",
    ),
    "scheme yields a non-unified class": (
        _set(["harmonisation", "gb50137", "R"], "residential"),
        r"scheme gb50137 yields 'residential'",
    ),
    "unquoted scheme code": (_set(["harmonisation", "landuse_plan", 111], "agricultural"), r"must be quoted strings"),
    "compare on a difference rule": (
        _set(["CT08", "compare"], {"a_field": "ydlb", "b_field": "boundary_type", "via": "gb50137_major"}),
        r"rule CT08: compare only applies to intersection rules",
    ),
    "compare via unknown scheme": (
        _set(["CT09", "compare", "via"], "gb50137_minor"),
        r"rule CT09: compare via unknown harmonisation scheme",
    ),
    "compare unknown field": (
        _set(["CT09", "compare", "a_field"], "ydlb"),
        r"rule CT09: compare a_field: layer 2203 has no attribute 'ydlb'",
    ),
    "duplicate rule code": (_duplicate_rule, r"rule CT01: the code is used twice"),
    "bad severity": (_set(["CT02", "severity"], "fatal"), r"rule CT02: severity 'fatal' is not one of"),
    "bad operation": (_set(["CT02", "operation"], "union"), r"rule CT02: operation 'union' is not one of"),
    "bad prevails": (_set(["CT02", "prevails"], "c"), r"rule CT02: prevails 'c' is not one of a, b"),
    "negative min area": (_set(["CT02", "min_area_m2"], -1), r"rule CT02: min_area_m2 must be a number"),
    "missing key": (_drop(["CT04", "prevails"]), r"rule CT04: missing prevails"),
    "unknown rule key": (_set(["CT04", "prevail"], "b"), r"rule CT04: unknown key 'prevail'"),
    "unknown side key": (_set(["CT08", "a", "exlcude"], ["H2"]), r"rule CT08: side a: unknown key 'exlcude'"),
    "no unified classes": (_set(["unified_classes"], []), r"unified_classes must be a non-empty list"),
    "priority unknown layer": (_set(["blueprint", "priority", 0, "layer"], "2399"), r"blueprint priority #1 .*unknown"),
    "priority class not unified": (
        _set(["blueprint", "priority", 1, "unified_class"], "farmland"),
        r"blueprint priority #2 \(layer 2103\): unified_class 'farmland' is not one of",
    ),
    "priority bad control level": (
        _set(["blueprint", "priority", 0, "control_level"], "forbidden"),
        r"control_level 'forbidden' is not one of",
    ),
    "priority class and scheme": (
        _set(["blueprint", "priority", 5, "unified_class"], "construction"),
        r"give either unified_class or scheme",
    ),
    "priority contradicting duplicate": (
        _append_priority({"layer": "2301", "unified_class": "water", "control_level": "restricted"}),
        r"blueprint priority: layer 2301 appears twice with contradicting entries",
    ),
    "priority overlapping contradiction": (
        _append_priority(
            {"layer": "2302", "where": {"grade": ["1", "2"]}, "unified_class": "water", "control_level": "restricted"}
        ),
        r"layer 2302 appears twice with overlapping selections and contradicting entries",
    ),
    "priority identical duplicate": (
        _append_priority({"layer": "2402", "unified_class": "ecological", "control_level": "prohibited"}),
        r"blueprint priority: layer 2402 appears twice$",
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_each_validation_error_names_the_rule_and_problem(case: str, tmp_path: Path):
    mutate, message = INVALID[case]
    raw = copy.deepcopy(RAW)
    mutate(raw)
    path = tmp_path / "conflicts.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(RulesError, match=message) as err:
        load_rules(path)
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_disjoint_priority_entries_for_one_layer_are_allowed(tmp_path: Path):
    raw = copy.deepcopy(RAW)
    raw["blueprint"]["priority"].insert(
        3, {"layer": "2302", "where": {"grade": ["2"]}, "unified_class": "water", "control_level": "restricted"}
    )
    path = tmp_path / "conflicts.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert len(load_rules(path).priority) == len(RAW["blueprint"]["priority"]) + 1


def test_duplicate_yaml_keys_and_unreadable_files_are_errors(tmp_path: Path):
    text = RULES_PATH.read_text(encoding="utf-8").replace("    E9: other\n", "    E9: other\n    E2: water\n", 1)
    path = tmp_path / "conflicts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=r"duplicate key 'E2'") as err:
        load_rules(path)
    assert "\n" not in str(err.value)
    with pytest.raises(RulesError, match="cannot read rules"):
        load_rules(tmp_path / "missing.yaml")
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(RulesError, match="not a mapping"):
        load_rules(path)
