"""Store a site check's result as ``json`` (its text, kept as written) instead of ``jsonb``.

The result is only ever written once and read back whole; nothing queries inside it. As
``jsonb`` the server parsed it into its binary form on every insert and printed it back to text on
every read; as ``json`` it only checks the syntax. Measured with real ~21 kB results (demo city at
scale 10, 2 cores, into copies of the table, the two interleaved): an insert takes 0.89 ms instead
of 1.23 ms (median). The GET endpoints serve the same JSON, now with its members in the order they
were answered rather than in jsonb's.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE site_check ALTER COLUMN result TYPE json USING result::json")
    _compress_lz4()


def downgrade() -> None:
    op.execute("ALTER TABLE site_check ALTER COLUMN result TYPE jsonb USING result::jsonb")
    _compress_lz4()


def _compress_lz4() -> None:
    # A change of type resets the column's compression to the default: lz4 again, where the server
    # was built with it (as in site01).
    op.execute(
        """
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                       AND 'lz4' = ANY(enumvals)) THEN
                ALTER TABLE site_check ALTER COLUMN result SET COMPRESSION lz4;
            END IF;
        END $$
        """
    )
