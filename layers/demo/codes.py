"""The one "truth" vocabulary of the demo city and how each plan spells it.

Every base face carries a *profile*: its kind of land and the plan attributes that follow from
it. The land-use plan (2104), the urban plan (2201), the survey (1201) and the protection layers
are all read off the same profile, which is why they agree; planted conflicts are profiles that
contradict themselves on purpose.
"""

from __future__ import annotations

# Primary face columns and their "absent" values.
PRIMARY = {
    "kind": "",  # urban | infra | water | forest | farm | village | bare
    "ydlb": "",  # 2201 GB 50137 code
    "ghdl": "",  # 2104 planned land class
    "dlbm": "",  # 1201 GB/T 21010 current land use
    "built": False,  # built up today
    "devb": "",  # 2202 boundary_type
    "reg": "",  # 2203 land_use ("" = no regulatory parcel)
    "redline": "",  # 2301 redline_type
    "pbf": 0,  # 2103 farmland_grade (0 = not permanent basic farmland)
    "fgrade": "",  # 2401 grade
    "welfare": "",  # 2402 level
    "wsp": "",  # 2302 grade
    "wsp_name": "",
    "green": "",  # 2204 green_type
    "blue": False,  # inside the 2205 blue line
    "water_id": -1,  # index of the water body (1105)
    "dz": -1,  # index of the assessed zone (3201)
    "quiet": False,  # planted site: keep every location-driven layer off it
}

URBAN_CODES = ("R1", "R2", "R3", "A1", "A2", "A3", "A5", "B1", "B2", "M1", "M2", "M3", "W1",
               "S1", "S3", "S4", "U1", "G1", "G2", "G3")  # fmt: skip

# Current use (GB/T 21010) of built urban land by master-plan code.
CURRENT_OF_URBAN = {
    "R1": "0701", "R2": "0701", "R3": "0701", "A1": "08H1", "A2": "08H1", "A3": "08H2",
    "A5": "08H2", "B1": "05H1", "B2": "05H1", "M1": "0601", "M2": "0601", "M3": "0601",
    "W1": "0508", "S1": "1004", "S3": "1004", "S4": "1004", "U1": "0809", "G1": "0810",
    "G2": "0810", "G3": "0810", "H2": "1003", "H3": "1109",
}  # fmt: skip

DLMC = {
    "0101": "水田", "0102": "水浇地", "0103": "旱地", "0201": "果园", "0301": "乔木林地",
    "0305": "灌木林地", "0401": "天然牧草地", "0404": "其他草地", "05H1": "商业服务业设施用地",
    "0508": "物流仓储用地", "0601": "工业用地", "0602": "采矿用地", "0701": "城镇住宅用地",
    "0702": "农村宅基地", "08H1": "机关团体新闻出版用地", "08H2": "科教文卫用地",
    "0809": "公用设施用地", "0810": "公园与绿地", "09": "特殊用地", "1001": "铁路用地",
    "1003": "公路用地", "1004": "城镇村道路用地", "1006": "农村道路", "1101": "河流水面",
    "1103": "水库水面", "1104": "坑塘水面", "1107": "沟渠", "1109": "水工建筑用地",
    "1202": "设施农用地", "1206": "裸土地",
}  # fmt: skip

GREEN_OF = {"G1": "park", "G2": "protective", "G3": "square"}
WATER_CURRENT = {"river": "1101", "canal": "1107", "lake": "1104", "reservoir": "1103"}


def profile(**kw) -> dict:
    """A full primary profile: defaults overridden by ``kw`` (unknown names are an error)."""
    unknown = set(kw) - set(PRIMARY)
    if unknown:
        raise KeyError(f"unknown face columns {sorted(unknown)}")
    return {**PRIMARY, **kw}


def urban(code: str, devb: str = "central_city", reg: str | None = None, built: bool = True, **kw) -> dict:
    """Urban construction land inside the development boundary, with its regulatory parcel."""
    return profile(
        **{
            "kind": "urban",
            "ydlb": code,
            "ghdl": "211",
            "built": built,
            "devb": devb,
            "dlbm": CURRENT_OF_URBAN[code] if built else "0103",
            "reg": code if reg is None else reg,
            "green": GREEN_OF.get(code, ""),
            **kw,
        }
    )


def infra(code: str, **kw) -> dict:
    """Regional transport (H2) or utility (H3) land, allowed outside the development boundary."""
    return profile(
        **{
            "kind": "infra",
            "ydlb": code,
            "ghdl": "221" if code == "H2" else "222",
            "dlbm": CURRENT_OF_URBAN[code],
            "built": True,
            **kw,
        }
    )


def farm(pbf: int = 0, **kw) -> dict:
    """Cultivated land; ``pbf`` > 0 makes it permanent basic farmland of that grade."""
    return profile(**{"kind": "farm", "ydlb": "E2", "ghdl": "111", "dlbm": "0103", "pbf": pbf, **kw})


def forest(**kw) -> dict:
    """Forest land."""
    return profile(**{"kind": "forest", "ydlb": "E2", "ghdl": "113", "dlbm": "0301", **kw})
