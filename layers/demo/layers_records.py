"""Layers derived from other generated layers: cadastral parcels, the approval records that
follow project sites, economic statistics per census unit, and historic conservation zones."""

from __future__ import annotations

import numpy as np
import shapely

from layers.demo.derive import Context, Layer

CORE_M = 60.0  # core protection zone around a heritage site
BELT_M = 300.0  # construction-control belt
SITE_CLEARANCE_M = 150.0  # keep conservation zones off the planted check sites


def cadastral_parcels(ctx: Context, parcels: Layer) -> Layer:
    """1203: one state-owned land parcel (宗地) per regulatory parcel, sharing its geometry."""
    ids = parcels.columns["parcel_id"]
    return Layer("1203", parcels.geoms.copy(),
                 {"parcel_no": [f"370100-{pid}" for pid in ids], "owner_type": ["state"] * len(parcels)})


def land_supply(ctx: Context, sites: Layer) -> Layer:
    """3102: most project sites have had their land supplied (allocated, tendered, auctioned…)."""
    rng = ctx.rng("3102")
    pick = np.flatnonzero(rng.random(len(sites)) < 0.8)
    kinds = np.array(["allocation", "tender", "auction", "listing", "agreement"])
    days = rng.integers(0, 6 * 365, len(pick))
    dates = np.datetime64("2019-01-01", "D") + days.astype("timedelta64[D]")
    return Layer("3102", sites.geoms[pick], {"supply_type": kinds[rng.integers(0, 5, len(pick))].tolist(),
                                             "supplied_on": dates})


def planning_permits(ctx: Context, supplied: Layer) -> Layer:
    """3103: land-use and engineering planning permits on supplied land."""
    rng = ctx.rng("3103")
    pick = np.flatnonzero(rng.random(len(supplied)) < 0.75)
    kind = np.where(rng.random(len(pick)) < 0.5, "land_use", "engineering")
    prefix = {"land_use": "地字第", "engineering": "建字第"}
    numbers = [f"{prefix[k]}370100{2019 + i % 7}{i + 1:05d}号" for i, k in enumerate(kind)]
    return Layer("3103", supplied.geoms[pick], {"permit_no": numbers, "permit_type": kind.tolist()})


def construction_permits(ctx: Context, permits: Layer) -> Layer:
    """3104: construction permits follow engineering planning permits."""
    kinds = np.asarray(permits.columns["permit_type"])
    pick = np.flatnonzero(kinds == "engineering")
    return Layer("3104", permits.geoms[pick],
                 {"permit_no": [f"370100{i + 1:06d}0101" for i in range(len(pick))]})


def economy(ctx: Context, units: Layer) -> Layer:
    """4102: GDP per census unit, in proportion to population (Jinan 2020: ~1.01 trillion yuan)."""
    population = np.asarray(units.columns["population"], dtype=float)
    share = population / population.sum()
    gdp = np.round(share * 1.014e8, 1)  # in 10,000 yuan
    return Layer("4102", units.geoms.copy(), {"unit_code": list(units.columns["unit_code"]), "gdp_10k_yuan": gdp})


def historic_conservation(ctx: Context, heritage: Layer) -> Layer:
    """2503: a core zone and a construction-control belt around each national or provincial
    heritage site, kept clear of the planted check sites so their expected answers hold."""
    levels = np.asarray(heritage.columns["heritage_level"])
    pick = np.flatnonzero(np.isin(levels, ["national", "provincial"]))
    keep_off = shapely.buffer(shapely.union_all([s.geom for s in ctx.plan.sites]), SITE_CLEARANCE_M)
    core = shapely.difference(shapely.buffer(heritage.geoms[pick], CORE_M), keep_off)
    belt = shapely.difference(shapely.difference(shapely.buffer(heritage.geoms[pick], BELT_M), keep_off), core)
    geoms = np.concatenate([core, belt])
    zones = ["core"] * len(pick) + ["control_belt"] * len(pick)
    names = [f"{heritage.columns['name'][i]}保护区" for i in pick] * 2
    keep = ~shapely.is_empty(geoms) & (shapely.area(geoms) > 100.0)
    columns = {"zone": np.asarray(zones)[keep].tolist(), "name": np.asarray(names)[keep].tolist()}
    return Layer("2503", geoms[keep], columns)
