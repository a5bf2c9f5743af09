"""Spatial analysis: overlay, conflicts, blueprint, site checks, assessments, rasters."""
