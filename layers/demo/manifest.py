"""The manifest of a generated demo city: what was written, and the ground truth to test against."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    """Contents of ``manifest.json``.

    ``layers`` maps a catalogue code to ``{"file", "features", "geometry_type"}``; ``rasters``
    maps a code to ``{"file", "unit", "cell_m", "min", "max"}``; ``conflicts`` lists the planted
    cases ``{"rule", "a_layer", "a_fid", "b_layer", "b_fid", "wkt", "area_m2"}``; ``sites`` maps a
    site name to its polygon (``wkt`` in EPSG:4548 and ``geojson`` in EPSG:4326) and the
    ``expected`` answer of the site check with its details; ``sources`` says where each input
    came from.
    """

    city: str
    seed: int
    scale: int
    srid: int
    coverage: str
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    rasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    sites: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_count(self) -> int:
        """Total number of vector features over all layers."""
        return sum(v["features"] for v in self.layers.values())

    def to_json(self) -> str:
        """Stable JSON text (no timestamps): equal manifests give equal bytes."""
        return json.dumps(asdict(self), ensure_ascii=False, indent=1) + "\n"

    def write(self, out_dir: Path) -> Path:
        """Write ``manifest.json`` into ``out_dir``; returns its path."""
        path = Path(out_dir) / MANIFEST_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, out_dir: Path) -> Manifest:
        """Load the manifest of a generated city.

        Examples
        --------
        >>> Manifest.read(Path("demo/jinan"))  # doctest: +SKIP
        """
        return cls(**json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8")))
