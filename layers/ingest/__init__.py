"""Ingest: load plan files into versioned thematic layers."""

from layers.ingest.pipeline import LoadReport, load_frame, load_layer

__all__ = ["LoadReport", "load_frame", "load_layer"]
