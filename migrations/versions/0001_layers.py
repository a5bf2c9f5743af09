"""Layers: deployment settings, catalogue classes, versioned layers, partitioned features.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    srid = int(context.config.attributes.get("storage_srid", 4548))
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute(
        """
        CREATE TABLE deployment (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            storage_srid integer NOT NULL
        )
        """
    )
    op.execute(f"INSERT INTO deployment (storage_srid) VALUES ({srid})")
    # The catalogue itself lives in YAML; this table mirrors its codes so versions can refer to them.
    op.execute(
        """
        CREATE TABLE layer (
            code text PRIMARY KEY,
            name_zh text NOT NULL,
            name_en text NOT NULL,
            geometry_type text NOT NULL
                CHECK (geometry_type IN ('polygon', 'line', 'point', 'raster')),
            current_version_id integer
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE layer_version (
            id serial PRIMARY KEY,
            layer_code text NOT NULL REFERENCES layer (code),
            version integer NOT NULL,
            source_name text NOT NULL,
            source_checksum text NOT NULL,
            source_crs text,
            feature_count integer NOT NULL,
            repaired_count integer NOT NULL DEFAULT 0,
            extent geometry(Polygon, {srid}),
            coverage geometry(MultiPolygon, {srid}),
            valid_from timestamptz NOT NULL DEFAULT now(),
            loaded_at timestamptz NOT NULL DEFAULT now(),
            superseded_at timestamptz,
            raster_path text,
            report jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            UNIQUE (layer_code, version)
        )
        """
    )
    op.execute(
        "ALTER TABLE layer ADD CONSTRAINT layer_current_version_fk "
        "FOREIGN KEY (current_version_id) REFERENCES layer_version (id) DEFERRABLE"
    )
    op.execute("CREATE INDEX layer_version_as_of ON layer_version (layer_code, valid_from)")
    op.execute("CREATE INDEX layer_version_coverage ON layer_version USING gist (coverage)")
    # One partition per layer version: a load creates, fills and indexes its own table and
    # attaches it in the transaction that switches the current version, so readers never see a
    # half-loaded layer and a killed load leaves nothing behind.
    op.execute(
        f"""
        CREATE TABLE feature (
            version_id integer NOT NULL,
            fid bigint NOT NULL,
            props jsonb NOT NULL,
            geom geometry(Geometry, {srid}) NOT NULL
        ) PARTITION BY LIST (version_id)
        """
    )
    # fid is unique within a version (ingest checks it before COPY); no btree to build per load.
    op.execute("CREATE INDEX feature_geom ON feature USING gist (geom)")


def downgrade() -> None:
    op.execute("DROP TABLE feature")
    op.execute("ALTER TABLE layer DROP CONSTRAINT layer_current_version_fk")
    op.execute("DROP TABLE layer_version")
    op.execute("DROP TABLE layer")
    op.execute("DROP TABLE deployment")
