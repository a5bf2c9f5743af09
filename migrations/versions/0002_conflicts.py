"""Conflicts: overlay runs, the conflict register and its lifecycle events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    srid = int(context.config.attributes.get("storage_srid", 4548))
    # A run records what it read (layer -> version id), the rules file checksum, per-rule timings,
    # its summary (by type, by district, kept/closed/new) and the rules it could not evaluate.
    op.execute(
        """
        CREATE TABLE conflict_run (
            id serial PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            rules_checksum text NOT NULL,
            versions jsonb NOT NULL DEFAULT '{}'::jsonb,
            timings jsonb NOT NULL DEFAULT '{}'::jsonb,
            summary jsonb NOT NULL DEFAULT '{}'::jsonb,
            not_evaluated jsonb NOT NULL DEFAULT '[]'::jsonb
        )
        """
    )
    # One row per (a feature, b feature) pair; difference rules have no b feature. Version ids are
    # not foreign keys: the register outlives the versions it cites and must not block clean-ups.
    op.execute(
        f"""
        CREATE TABLE conflict (
            id bigserial PRIMARY KEY,
            run_id integer NOT NULL REFERENCES conflict_run (id) ON DELETE CASCADE,
            last_run_id integer NOT NULL REFERENCES conflict_run (id) ON DELETE CASCADE,
            rule text NOT NULL,
            severity text NOT NULL CHECK (severity IN ('critical', 'major', 'minor')),
            status text NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'assigned', 'resolved', 'accepted', 'closed')),
            a_layer text NOT NULL,
            a_version_id integer NOT NULL,
            a_fid bigint NOT NULL,
            b_layer text,
            b_version_id integer,
            b_fid bigint,
            a_attrs jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            b_attrs jsonb,
            area_m2 double precision NOT NULL,
            district_code text,
            district_name text,
            geom geometry(MultiPolygon, {srid}) NOT NULL,
            closed_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX conflict_geom ON conflict USING gist (geom)")
    op.execute("CREATE INDEX conflict_live ON conflict (rule, status) WHERE closed_at IS NULL")
    op.execute("CREATE INDEX conflict_district ON conflict (district_code)")
    op.execute("CREATE INDEX conflict_runs ON conflict (run_id, last_run_id)")
    op.execute(
        """
        CREATE TABLE conflict_event (
            id bigserial PRIMARY KEY,
            conflict_id bigint NOT NULL REFERENCES conflict (id) ON DELETE CASCADE,
            status text NOT NULL,
            adjusted_plan text CHECK (adjusted_plan IN ('a', 'b')),
            note text,
            "by" text,
            at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX conflict_event_conflict ON conflict_event (conflict_id, at)")


def downgrade() -> None:
    op.execute("DROP TABLE conflict_event")
    op.execute("DROP TABLE conflict")
    op.execute("DROP TABLE conflict_run")
