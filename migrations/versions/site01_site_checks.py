"""Site checks: every check is stored with its input, the layer versions it read and its result;
big features are kept subdivided for them.

Revision ID: site01
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import context, op

revision = "site01"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    srid = int(context.config.attributes.get("storage_srid", 4548))
    op.execute(
        f"""
        CREATE TABLE site_check (
            id text PRIMARY KEY,
            checked_at timestamptz NOT NULL DEFAULT now(),
            as_of date,
            buffer_m double precision NOT NULL DEFAULT 0,
            input_crs text NOT NULL,
            request jsonb NOT NULL,
            geom geometry(MultiPolygon, {srid}) NOT NULL,
            verdict text NOT NULL
                CHECK (verdict IN ('prohibited', 'restricted', 'conditional', 'allowed')),
            complete boolean NOT NULL,
            versions jsonb NOT NULL,
            result jsonb NOT NULL
        )
        """
    )
    # lz4 rather than the default pglz. Measured with real ~21 kB results (demo city at scale 10,
    # 2 cores, the two interleaved): an insert takes 0.94 ms instead of 1.29 ms (median), for 7.0 kB
    # stored instead of 6.7 kB. Only where the server was built with lz4.
    op.execute(
        """
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                       AND 'lz4' = ANY(enumvals)) THEN
                ALTER TABLE site_check ALTER COLUMN result SET COMPRESSION lz4,
                                       ALTER COLUMN request SET COMPRESSION lz4;
            END IF;
        END $$
        """
    )
    op.execute("CREATE INDEX site_check_checked_at ON site_check (checked_at)")
    op.execute("CREATE INDEX site_check_geom ON site_check USING gist (geom)")
    # A derived cache, filled by the first check that reads a version (spatial/site/pieces.py):
    # features too big to test quickly (an ecological red line can have 50,000 vertices), cut
    # into pieces of at most 256 vertices. Versions never change, so neither do their pieces.
    op.execute(
        """
        CREATE TABLE site_piece_version (
            version_id integer PRIMARY KEY REFERENCES layer_version (id) ON DELETE CASCADE,
            built_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE site_piece (
            version_id integer NOT NULL REFERENCES site_piece_version (version_id) ON DELETE CASCADE,
            fid bigint NOT NULL,
            props jsonb NOT NULL,
            geom geometry(Geometry, {srid}) NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX site_piece_geom ON site_piece USING gist (geom)")
    op.execute("CREATE INDEX site_piece_version_fid ON site_piece (version_id, fid)")


def downgrade() -> None:
    op.execute("DROP TABLE site_piece")
    op.execute("DROP TABLE site_piece_version")
    op.execute("DROP TABLE site_check")
