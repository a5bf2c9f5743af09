"""What users ask of the conflict register, checked the same way for the CLI and the HTTP API.

An unknown filter value is an ``InvalidInput`` error naming the value, never an empty listing; an
unknown conflict is ``NotFound``. Reading the register is spatial/conflicts/listing.py, writing it
spatial/conflicts/register.py.
"""

from __future__ import annotations

import sqlalchemy as sa

from layers.errors import InvalidInput, NotFound
from spatial.conflicts import lifecycle
from spatial.conflicts.listing import Filters, get_conflict, get_run
from spatial.conflicts.rules import RuleSet, load_rules
from spatial.conflicts.terms import SEVERITIES, STATUSES


def checked_filters(conn: sa.Connection, *, rule: str | None = None, severity: str | None = None,
                    district: str | None = None, status: str | None = None, run_id: int | None = None,
                    bbox: tuple[float, float, float, float] | None = None,
                    rules: RuleSet | None = None) -> Filters:
    """Register filters after checking each given value exists (``None`` means any).

    Parameters
    ----------
    rule : a rule code of the rules file, e.g. ``"CT03"``.
    district : a district code found in the register or in the current divisions (layer 1101).
    run_id : a conflict run that exists.
    bbox : already checked by the caller (minx, miny, maxx, maxy in EPSG:4326).

    Raises
    ------
    InvalidInput
        Naming the first unknown value and, where short, the known ones.

    Examples
    --------
    >>> checked_filters(conn, rule="CT99")  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    layers.errors.InvalidInput: unknown conflict type 'CT99'; known: CT01, CT02, ...
    """
    if rule is not None:
        known = [r.code for r in (rules or load_rules()).rules]
        if rule not in known:
            raise InvalidInput(f"unknown conflict type {rule!r}; known: {', '.join(known)}")
    _one_of("severity", severity, SEVERITIES)
    _one_of("status", status, STATUSES)
    if district is not None and not _district_known(conn, district):
        raise InvalidInput(f"unknown district {district!r}: not a district of layer 1101")
    if run_id is not None and get_run(conn, run_id) is None:
        raise InvalidInput(f"unknown conflict run {run_id}")
    return Filters(rule=rule, severity=severity, district=district, status=status, bbox=bbox, run_id=run_id)


def conflict_detail(conn: sa.Connection, conflict_id: int, *, srid: int = 4326,
                    rules: RuleSet | None = None) -> dict:
    """One conflict with both features' attributes, its rule's names, advice and prevailing plan,
    and its event history; geometry as GeoJSON in ``srid``.

    Raises
    ------
    NotFound
        No conflict has this id.
    """
    item = get_conflict(conn, conflict_id, srid=srid)
    if item is None:
        raise NotFound(f"no conflict {conflict_id}")
    rule = next((r for r in (rules or load_rules()).rules if r.code == item["rule"]), None)
    if rule is not None:  # a rule removed from the file since the run leaves its conflicts bare
        item.update(name_zh=rule.name_zh, name_en=rule.name_en, operation=rule.operation,
                    advice_zh=rule.advice_zh, advice_en=rule.advice_en, prevails=rule.prevails,
                    prevailing_layer=rule.a.layer if rule.prevails == "a" else rule.b.layer)
    item["events"] = lifecycle.history(conn, conflict_id)
    return item


def _one_of(name: str, value: str | None, allowed) -> None:
    if value is not None and value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def _district_known(conn: sa.Connection, code: str) -> bool:
    return conn.execute(sa.text(
        """
        SELECT EXISTS (SELECT 1 FROM conflict WHERE district_code = :c)
            OR EXISTS (SELECT 1 FROM feature f JOIN layer l ON l.current_version_id = f.version_id
                       WHERE l.code = '1101' AND f.props->>'district_code' = :c)
        """), {"c": code}).scalar_one()
