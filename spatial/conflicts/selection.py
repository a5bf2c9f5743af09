"""Applying conflict rules to features: harmonising codes into classes, selecting a side's rows.

Apart from the rules file's reading (spatial/conflicts/rules.py), which needs neither numpy nor
pandas, so that the register's commands start at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from spatial.conflicts.rules import Scheme, Side


def harmonise(values: ArrayLike, scheme: Scheme | Mapping[str, str]) -> NDArray[np.object_]:
    """Map codes to classes through a harmonisation scheme; the longest matching prefix wins.

    Parameters
    ----------
    values : array_like
        Codes (strings; other values are compared by their ``str``). Missing values stay ``None``.
    scheme : Scheme or mapping
        Code prefix → class.

    Returns
    -------
    numpy.ndarray of object
        The class of each value, ``None`` where no prefix matches.

    Examples
    --------
    >>> harmonise(["1109", "1101", "05H1", "99", None], {"11": "water", "1109": "construction", "05": "construction"})
    array(['construction', 'water', 'construction', None, None], dtype=object)
    """
    scheme = scheme if isinstance(scheme, Scheme) else Scheme("", scheme)
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object), dtype=object), use_na_sentinel=True)
    # few distinct codes: resolve each once, then broadcast with take
    resolved = np.empty(len(uniques) + 1, dtype=object)
    resolved[:-1] = [scheme.classify(value) for value in uniques]
    return resolved[codes]  # code -1 (missing) picks the trailing None


def select(gdf: pd.DataFrame, side: Side) -> NDArray[np.bool_]:
    """Which rows of a layer's frame a rule side selects.

    Parameters
    ----------
    gdf : pandas.DataFrame or geopandas.GeoDataFrame
        Features of ``side.layer`` whose columns are the catalogue attributes.
    side : Side
        The ``where`` filters, then the harmonised ``classes``, then ``exclude``.

    Returns
    -------
    numpy.ndarray of bool

    Examples
    --------
    >>> from spatial.conflicts.rules import load_rules
    >>> side = load_rules().rule("CT08").a
    >>> select(pd.DataFrame({"ydlb": ["R2", "H2", "E2", "M1"]}), side).tolist()
    [True, False, False, True]
    """
    needed = [*side.where, *([side.field] if side.field else [])]
    missing = [c for c in needed if c not in gdf.columns]
    if missing:
        raise ValueError(f"features of layer {side.layer} have no column {missing[0]!r}")
    mask = np.ones(len(gdf), dtype=bool)
    for name, allowed in side.where.items():
        mask &= gdf[name].isin(allowed).to_numpy()
    if side.scheme is not None and side.field is not None:
        classes = pd.Series(harmonise(gdf[side.field], side.scheme), dtype=object)
        mask &= classes.isin(side.classes).to_numpy()
        if side.exclude:
            mask &= ~gdf[side.field].isin(side.exclude).to_numpy()
    return mask
