"""The conflict lifecycle: open → assigned → resolved | accepted, with who, when and why."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from layers.errors import InvalidInput, NotFound
from spatial.conflicts import lifecycle
from spatial.conflicts.run import run_conflicts


@pytest.fixture
def conflict_ids(city, empty_store, settings) -> list[int]:
    run_conflicts(empty_store, settings)
    with empty_store.connect() as conn:
        return conn.execute(sa.text("SELECT id FROM conflict ORDER BY id LIMIT 3")).scalars().all()


def test_resolve_records_plan_note_who_and_when(conflict_ids, empty_store):
    cid = conflict_ids[0]
    with empty_store.begin() as conn:
        lifecycle.set_status(conn, cid, "assigned", by="规划科", note="交规划科核实")
        event = lifecycle.set_status(conn, cid, "resolved", adjusted_plan="b", by="李工", note="土规调整")
    assert event["from"] == "assigned" and event["adjusted_plan"] == "b"
    with empty_store.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM conflict WHERE id = :id"), {"id": cid}).scalar_one()
        events = lifecycle.history(conn, cid)
    assert status == "resolved"
    assert [(e["status"], e["adjusted_plan"], e["by"]) for e in events] == [
        ("open", None, "conflict run"), ("assigned", None, "规划科"), ("resolved", "b", "李工")]
    assert events[-1]["note"] == "土规调整" and events[-1]["at"] >= events[-2]["at"]


def test_accept_as_exception_needs_a_reason(conflict_ids, empty_store):
    cid = conflict_ids[1]
    with empty_store.begin() as conn:
        lifecycle.set_status(conn, cid, "assigned", by="规划科")
    with pytest.raises(InvalidInput, match="needs a note"), empty_store.begin() as conn:
        lifecycle.set_status(conn, cid, "accepted", by="王工")
    with empty_store.begin() as conn:
        lifecycle.set_status(conn, cid, "accepted", by="王工", note="重点项目，经市政府批准保留")
    with empty_store.connect() as conn:
        assert [e["status"] for e in lifecycle.history(conn, cid)] == ["open", "assigned", "accepted"]


@pytest.mark.parametrize("current, new, plan, by, message", [
    ("open", "resolved", "a", "x", "open can only become assigned, not resolved"),
    ("open", "accepted", None, "x", "open can only become assigned"),
    ("assigned", "assigned", None, None, "assigned can only become resolved or accepted"),
    ("assigned", "resolved", None, "x", "needs the adjusted plan"),
    ("assigned", "resolved", "c", "x", "needs the adjusted plan"),
    ("assigned", "resolved", "a", None, "say who resolved"),
    ("assigned", "resolved", "a", "  ", "say who resolved"),
    ("open", "assigned", "a", None, "only given when resolving"),
    ("resolved", "assigned", None, None, "final"),
    ("accepted", "resolved", "a", "x", "final"),
    ("closed", "assigned", None, None, "final"),
    ("open", "closed", None, None, "status must be one of"),
    ("assigned", "open", None, None, "status must be one of"),
])
def test_invalid_transitions(current, new, plan, by, message):
    with pytest.raises(InvalidInput, match=message):
        lifecycle.check_transition(current, new, adjusted_plan=plan, note=None, by=by)


def test_a_refused_transition_changes_nothing(conflict_ids, empty_store):
    cid = conflict_ids[2]
    with pytest.raises(InvalidInput), empty_store.begin() as conn:
        lifecycle.set_status(conn, cid, "resolved", adjusted_plan="a", by="x")
    with empty_store.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM conflict WHERE id = :id"), {"id": cid}).scalar_one()
        assert status == "open" and len(lifecycle.history(conn, cid)) == 1


def test_unknown_conflict_is_not_found(register):
    with pytest.raises(NotFound), register.begin() as conn:
        lifecycle.set_status(conn, 999_999, "assigned", by="x")
