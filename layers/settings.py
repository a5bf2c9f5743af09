"""Settings, read from the environment; nothing is built at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CHECKOUT = Path(__file__).resolve().parents[1]


class DatabaseSettings(BaseSettings):
    """Where the PostGIS database is.

    With no ``DATABASE_URL`` the platform runs its own embedded cluster in ``data_dir``.
    """

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    embedded_database: str = Field(default="blueprint", validation_alias="BLUEPRINT_DATABASE")

    @field_validator("database_url")
    @classmethod
    def _sqlalchemy_driver(cls, url: str | None) -> str | None:
        # Accept plain libpq URLs; SQLAlchemy needs the psycopg 3 driver named.
        if url and url.startswith(("postgres://", "postgresql://")):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url or None


class StorageSettings(BaseSettings):
    """Storage CRS and local folders of a deployment (prefix ``BLUEPRINT_``)."""

    model_config = SettingsConfigDict(env_prefix="BLUEPRINT_", extra="ignore")

    storage_srid: int = 4548
    data_dir: Path = CHECKOUT / ".blueprint"

    @field_validator("storage_srid")
    @classmethod
    def _projected(cls, srid: int) -> int:
        from pyproj import CRS

        crs = CRS.from_epsg(srid)
        if not crs.is_projected:
            raise ValueError(f"storage CRS EPSG:{srid} must be projected (areas are in m²)")
        return srid

    @property
    def raster_dir(self) -> Path:
        return self.data_dir / "rasters"


class ServerSettings(BaseSettings):
    """The HTTP server and web map (prefix ``BLUEPRINT_``)."""

    model_config = SettingsConfigDict(env_prefix="BLUEPRINT_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    basemap_url: str | None = "https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png"
    basemap_attribution: str = "© OpenStreetMap contributors"
    max_request_bytes: int = 2 * 1024 * 1024
    max_site_vertices: int = 10_000
    tile_feature_limit: int = 20_000
    tile_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Memory for built tiles, per worker process (0: keep none in memory)."""
    tile_store: bool = True
    """Read tiles from, and write built tiles to, the database's tile store (false: build every tile the
    memory cache does not hold)."""
    tile_version_ttl: float = Field(default=1.0, ge=0.0, le=5.0)
    """Seconds a layer's current version is remembered by the tile endpoint (0: look it up for every tile).
    A newly loaded version shows in tiles at most this long after it is switched in."""


class Settings(BaseSettings):
    """All settings of one deployment, one sub-object per concern."""

    model_config = SettingsConfigDict(extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    def on_database(self, name: str) -> Settings:
        """The same deployment, but another database on its server (tests and benchmarks use their own).

        Examples
        --------
        >>> Settings().on_database("blueprint_test").database.embedded_database  # doctest: +SKIP
        'blueprint_test'
        """
        if self.database.database_url:
            import sqlalchemy as sa  # only here: settings stay cheap to import

            url = sa.engine.make_url(self.database.database_url).set(database=name)
            database = DatabaseSettings(DATABASE_URL=url.render_as_string(hide_password=False))
        else:
            database = DatabaseSettings(BLUEPRINT_DATABASE=name)
        return Settings(database=database, storage=self.storage, server=self.server)
