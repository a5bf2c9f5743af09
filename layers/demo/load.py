"""Loading a generated demo city through the normal ingest path (no back door into the tables)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import shapely
from sqlalchemy.engine import Engine

from layers.catalogue import load_catalogue
from layers.demo.manifest import Manifest
from layers.ingest import LoadReport, load_layer
from layers.settings import Settings


@dataclass
class DemoLoad:
    """What loading the demo did."""

    reports: list[LoadReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def features(self) -> int:
        return sum(r.features for r in self.reports)


def demo_files(out_dir: Path) -> list[tuple[str, Path]]:
    """(layer code, file) for every layer file the generator wrote, in catalogue order."""
    manifest = Manifest.read(out_dir)
    files = {code: out_dir / entry["file"] for code, entry in (*manifest.layers.items(), *manifest.rasters.items())}
    order = list(load_catalogue().minors)
    return sorted(files.items(), key=lambda item: order.index(item[0]))


def load_demo(engine: Engine, settings: Settings, out_dir: Path, *,
              progress: Callable[[str], None] | None = None, threads: int = 2) -> DemoLoad:
    """Load every layer of a generated demo city as a new version, the city boundary as coverage.

    Layers load side by side on ``threads`` connections (each load is its own transaction).
    """
    started = time.perf_counter()
    city = gpd.read_parquet(out_dir / "coverage.parquet").to_crs(settings.storage.storage_srid)
    coverage = shapely.union_all(city.geometry.values)
    files = demo_files(out_dir)
    result = DemoLoad()

    def load_one(item: tuple[str, Path]) -> LoadReport:
        code, path = item
        return load_layer(engine, settings, path=path, layer_code=code, coverage=coverage)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done, report in enumerate(pool.map(load_one, files), start=1):
            result.reports.append(report)
            if progress:
                state = "unchanged" if report.unchanged else f"{sum(report.timings.values()):.1f} s"
                progress(f"[{done}/{len(files)}] layer {report.layer_code}: {report.features:,} features "
                         f"v{report.version} ({state})")
    result.seconds = time.perf_counter() - started
    return result
