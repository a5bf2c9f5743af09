"""Thematic layers: the catalogue (data), the PostGIS store and ingest."""
