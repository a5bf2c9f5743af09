"""`blueprint layers load|list|versions|export`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from api.cli.output import ProgressPrinter, print_json
from layers.errors import InvalidInput
from spatial.conflicts.terms import EXPORT_FORMATS

if TYPE_CHECKING:
    import shapely

    from layers.settings import Settings
    from viewer.tile_seed import LayerSeed


def register(commands) -> None:
    group = commands.add_parser("layers", help="load and list thematic layers")
    sub = group.add_subparsers(dest="layers_command", required=True, metavar="ACTION")
    load_p = sub.add_parser("load", help="load a plan file as a new version of a layer")
    load_p.add_argument("path", help="GeoPackage, Shapefile (or .zip), GeoJSON, FlatGeobuf, GeoParquet, GeoTIFF")
    load_p.add_argument("--layer", required=True, help="catalogue minor class code, e.g. 2301")
    load_p.add_argument("--source-layer", help="layer inside a multi-layer file")
    load_p.add_argument("--crs", help="the file's CRS when it has none (or is wrong), e.g. EPSG:4490")
    load_p.add_argument("--coverage", help="a polygon file: the area the plan covers (default: data extent)")
    load_p.add_argument("--valid-from", help="date the version takes effect (default: now)")
    load_p.add_argument("--force", action="store_true", help="load even if the file equals the current source")
    load_p.add_argument("--no-tiles", action="store_true",
                        help="do not build the new version's map tiles now (each is then built on first view)")
    load_p.add_argument("--format", choices=("text", "json"), default="text")
    load_p.set_defaults(handler=load)
    list_p = sub.add_parser("list", help="each layer with its current version")
    list_p.add_argument("--format", choices=("text", "json"), default="text")
    list_p.set_defaults(handler=list_)
    versions_p = sub.add_parser("versions", help="every version of one layer")
    versions_p.add_argument("code")
    versions_p.add_argument("--format", choices=("text", "json"), default="text")
    versions_p.set_defaults(handler=versions)
    export_p = sub.add_parser("export", help="write a layer's current (or an earlier) version to a file")
    export_p.add_argument("code")
    export_p.add_argument("-o", "--output", required=True, help="output file (.gpkg, .geojson or .xlsx)")
    chosen = export_p.add_mutually_exclusive_group()
    chosen.add_argument("--version", type=int, help="the version number (see `layers versions`)")
    chosen.add_argument("--as-of", help="YYYY-MM-DD: the version in force that day")
    export_p.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the file suffix")
    export_p.set_defaults(handler=export)


def read_coverage(path: str, srid: int) -> shapely.Geometry:
    """The union of a polygon file's features, in the storage CRS."""
    import geopandas as gpd
    import shapely

    from layers.ingest.prepare import PrepareReport, to_storage_crs
    from layers.ingest.sources import open_source, read_source

    frame = read_source(open_source(path))
    if frame.crs is None:
        raise InvalidInput(f"coverage file {path} has no CRS")
    frame = to_storage_crs(gpd.GeoDataFrame(frame), srid=srid, crs_override=None, report=PrepareReport())
    return shapely.union_all(shapely.make_valid(frame.geometry.values))


def load(args) -> int:
    from layers import db
    from layers.catalogue import load_catalogue
    from layers.ingest import load_layer
    from layers.settings import Settings

    settings = Settings()
    catalogue = load_catalogue()
    minor = catalogue.minor(args.layer)  # unknown code: fail before touching the database
    coverage = read_coverage(args.coverage, settings.storage.storage_srid) if args.coverage else None
    engine = db.make_engine(settings)
    try:
        report = load_layer(engine, settings, path=args.path, layer_code=args.layer,
                            source_layer=args.source_layer, crs=args.crs, coverage=coverage,
                            valid_from=args.valid_from, progress=ProgressPrinter(Path(args.path).name),
                            catalogue=catalogue, force=args.force)
    finally:
        engine.dispose()
    tiles = None
    if not (args.no_tiles or report.unchanged or minor.geometry_type == "raster"):
        tiles = seed_version_tiles(settings, args.layer)
    if args.format == "json":
        print_json({**report.as_dict(), "tiles": tiles.as_dict() if tiles else None})
    else:
        print(report.summary())
        if tiles:
            print(f"  map tiles z{tiles.min_zoom}–{tiles.max_zoom}: {tiles.built:,} built ({tiles.empty:,} empty), "
                  f"{tiles.bytes / 1e6:,.1f} MB gzip in {tiles.seconds:.1f} s")
    return 0


def seed_version_tiles(settings: Settings, code: str) -> LayerSeed:
    """Seed the tile store with the layer's new version, so that the map's first views are look-ups."""
    from viewer.tile_seed import seed_tiles

    (seeded,) = seed_tiles(settings, codes=[code], progress=ProgressPrinter("tiles"))
    return seeded


def list_(args) -> int:
    from layers import db, store
    from layers.settings import Settings

    engine = db.make_engine(Settings(), start=False)
    with engine.connect() as conn:
        rows = store.list_layers(conn)
    engine.dispose()
    if args.format == "json":
        print_json(rows)
        return 0
    loaded = [r for r in rows if r["current_version"]]
    for row in loaded:
        v = row["current_version"]
        print(f"{row['code']} {row['name_zh']:<12} v{v['version']:<3} {row['feature_count']:>9,} features  "
              f"{v['source']}  loaded {v['loaded_at'][:19]}")
    print(f"{len(loaded)} of {len(rows)} catalogue layers loaded", file=sys.stderr)
    return 0


def versions(args) -> int:
    from layers import db, store
    from layers.catalogue import load_catalogue
    from layers.settings import Settings

    load_catalogue().minor(args.code)
    engine = db.make_engine(Settings(), start=False)
    with engine.connect() as conn:
        rows = [v.as_dict() for v in store.layer_versions(conn, args.code)]
    engine.dispose()
    if args.format == "json":
        print_json(rows)
        return 0
    for v in rows:
        state = "superseded" if v["superseded_at"] else "current"
        print(f"v{v['version']:<3} {v['feature_count']:>9,} features  {v['source']}  "
              f"valid from {v['valid_from'][:19]}  {state}  sha256 {v['checksum'][:12]}")
    return 0


def export(args) -> int:
    from layers import db, frames, store
    from layers.catalogue import load_catalogue
    from layers.settings import Settings
    from spatial.conflicts.export import checked_output, write_frame
    from spatial.site.request import parse_date

    minor = load_catalogue().minor(args.code)
    if minor.geometry_type == "raster":
        raise InvalidInput(f"layer {minor.code} is a raster layer: `blueprint layers versions {minor.code}` "
                           "names each version's GeoTIFF")
    fmt = checked_output(args.output, args.format)  # a bad file name fails before the work
    settings = Settings()
    progress = ProgressPrinter(f"layer {minor.code}")
    started = time.perf_counter()
    engine = db.make_engine(settings, start=False)
    try:
        with engine.connect() as conn:
            chosen = store.chosen_version(conn, minor.code, number=args.version, as_of=parse_date(args.as_of))
            progress(f"reading v{chosen.version} ({chosen.feature_count:,} features)", 0, 1)
            frame = frames.read_features(conn, version_id=chosen.id, srid=settings.storage.storage_srid)
    finally:
        engine.dispose()
    progress(f"writing {fmt}", 0, 1)
    write_frame(frame, args.output, fmt=fmt, layer=minor.code)
    state = f"superseded {chosen.superseded_at:%Y-%m-%d}" if chosen.superseded_at else "current"
    print(f"wrote layer {minor.code} v{chosen.version} ({len(frame):,} features, valid from "
          f"{chosen.valid_from:%Y-%m-%d}, {state}) to {args.output} in {time.perf_counter() - started:.1f} s")
    return 0
