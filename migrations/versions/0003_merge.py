"""Merge the conflict-register and site-check branches.

Revision ID: 0003
Revises: 0002, site01
Create Date: 2026-11-23
"""

revision = "0003"
down_revision = ("0002", "site01")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
