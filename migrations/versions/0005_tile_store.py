"""Tile store: built vector tiles kept by layer version, so a tile is built once, not per server process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A version never changes, so neither do its tiles; they go with the version (ON DELETE CASCADE).
    # ``data`` is the gzip form of the MVT, empty when no feature shows (so an empty area is not built
    # again). ``revision`` and ``feature_limit`` say how the tile was built: a row built another way
    # is not served, and is overwritten when the tile is built again.
    op.execute(
        """
        CREATE TABLE vector_tile (
            version_id integer NOT NULL REFERENCES layer_version (id) ON DELETE CASCADE,
            z smallint NOT NULL,
            x integer NOT NULL,
            y integer NOT NULL,
            revision smallint NOT NULL,
            feature_limit integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (version_id, z, x, y)
        )
        """
    )
    # Already gzip-compressed: keep large tiles out of line without compressing them again.
    op.execute("ALTER TABLE vector_tile ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE vector_tile")
