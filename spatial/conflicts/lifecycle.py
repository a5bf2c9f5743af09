"""The lifecycle of a registered conflict: open → assigned → resolved or accepted.

``resolved`` records which plan was adjusted (side ``a`` or ``b`` of the rule); ``accepted`` records
a justified exception. Every change is a ``conflict_event`` row with who, when and a note, so the
history survives later runs. A conflict that a later run no longer finds is ``closed`` by the
register (spatial/conflicts/register.py), never by hand.
"""

from __future__ import annotations

import sqlalchemy as sa

from layers.errors import InvalidInput, NotFound
from spatial.conflicts.terms import SETTABLE

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("assigned",),
    "assigned": ("resolved", "accepted"),
    "resolved": (),
    "accepted": (),
    "closed": (),
}
"""Allowed next statuses; anything else is an ``InvalidInput`` error."""


def check_transition(current: str, new: str, *, adjusted_plan: str | None, note: str | None,
                     by: str | None) -> None:
    """Raise ``InvalidInput`` unless ``current → new`` is allowed with these details.

    Examples
    --------
    >>> check_transition("open", "assigned", adjusted_plan=None, note=None, by="王工")
    >>> check_transition("open", "resolved", adjusted_plan="a", note=None, by="王工")
    Traceback (most recent call last):
    ...
    layers.errors.InvalidInput: a conflict that is open can only become assigned, not resolved
    """
    if new not in SETTABLE:
        raise InvalidInput(f"status must be one of {', '.join(SETTABLE)}, not {new!r}")
    allowed = TRANSITIONS[current]
    if new not in allowed:
        after = " or ".join(allowed) if allowed else "nothing else (it is final)"
        raise InvalidInput(f"a conflict that is {current} can only become {after}, not {new}")
    if new == "resolved" and adjusted_plan not in ("a", "b"):
        raise InvalidInput("resolving a conflict needs the adjusted plan: a or b")
    if new != "resolved" and adjusted_plan is not None:
        raise InvalidInput("the adjusted plan (a or b) is only given when resolving")
    if new == "accepted" and not (note and note.strip()):
        raise InvalidInput("accepting a conflict as an exception needs a note saying why")
    if new in ("resolved", "accepted") and not (by and by.strip()):
        raise InvalidInput(f"say who {new} the conflict (by)")


def set_status(conn: sa.Connection, conflict_id: int, status: str, *, adjusted_plan: str | None = None,
               note: str | None = None, by: str | None = None) -> dict:
    """Move one conflict to a new status and record the event; the caller commits.

    Parameters
    ----------
    conn : a connection inside a transaction (the conflict row is locked until it ends).
    status : ``assigned``, ``resolved`` or ``accepted``.
    adjusted_plan : for ``resolved``: which side of the rule was changed, ``a`` or ``b``.

    Returns
    -------
    dict
        The event written: ``conflict_id``, ``from``, ``status``, ``adjusted_plan``, ``note``,
        ``by``, ``at`` (ISO 8601).

    Raises
    ------
    NotFound
        No conflict with that id.
    InvalidInput
        The transition is not allowed, or a required detail is missing.

    Examples
    --------
    >>> with engine.begin() as conn:  # doctest: +SKIP
    ...     set_status(conn, 17, "assigned", by="规划科")
    """
    row = conn.execute(sa.text("SELECT status FROM conflict WHERE id = :id FOR UPDATE"),
                       {"id": conflict_id}).first()
    if row is None:
        raise NotFound(f"no conflict {conflict_id}")
    current = row[0]
    note = note.strip() if note else None
    by = by.strip() if by else None
    check_transition(current, status, adjusted_plan=adjusted_plan, note=note, by=by)
    conn.execute(sa.text("UPDATE conflict SET status = :s WHERE id = :id"), {"s": status, "id": conflict_id})
    at = conn.execute(sa.text(
        'INSERT INTO conflict_event (conflict_id, status, adjusted_plan, note, "by") '
        "VALUES (:id, :s, :plan, :note, :by) RETURNING at"
    ), {"id": conflict_id, "s": status, "plan": adjusted_plan, "note": note, "by": by}).scalar_one()
    return {"conflict_id": conflict_id, "from": current, "status": status, "adjusted_plan": adjusted_plan,
            "note": note, "by": by, "at": at.isoformat()}


def history(conn: sa.Connection, conflict_id: int) -> list[dict]:
    """Every event of one conflict, oldest first."""
    rows = conn.execute(sa.text(
        'SELECT status, adjusted_plan, note, "by", at FROM conflict_event '
        "WHERE conflict_id = :id ORDER BY at, id"
    ), {"id": conflict_id}).all()
    return [{"status": s, "adjusted_plan": p, "note": n, "by": b, "at": at.isoformat()}
            for s, p, n, b, at in rows]
