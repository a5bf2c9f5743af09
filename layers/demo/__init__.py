"""The demo city: a Jinan-shaped set of plan layers with planted conflicts and check sites.

``generate_city(out_dir, scale=1, seed=0)`` writes GeoParquet layers, DEM/slope rasters, the
city coverage and a manifest with the ground truth; loading them is ``layers.demo.load``'s job.
"""

from layers.demo.generate import cached_city, generate_city
from layers.demo.manifest import Manifest

__all__ = ["Manifest", "cached_city", "generate_city"]
