"""`blueprint tiles seed`: build the vector tiles of the current layer versions into the tile store."""

from __future__ import annotations

from api.cli.output import ProgressPrinter, print_json


def register(commands) -> None:
    tiles = commands.add_parser("tiles", help="the vector tile store")
    sub = tiles.add_subparsers(dest="tiles_command", required=True, metavar="ACTION")
    seed_p = sub.add_parser("seed", help="build and store every tile over the current versions' data, "
                                         "so the map's first view of a tile is a look-up")
    seed_p.add_argument("--layer", action="append", dest="layers", metavar="CODE",
                        help="layer to seed (repeatable; default every loaded vector layer)")
    seed_p.add_argument("--min-zoom", type=int,
                        help="first zoom (default: the zoom from which the map draws the layer)")
    seed_p.add_argument("--max-zoom", type=int, help="last zoom (default 14)")
    seed_p.add_argument("--jobs", type=int,
                        help="tiles built at once, one database connection each (default: the CPU count, at most 8)")
    seed_p.add_argument("--format", choices=("text", "json"), default="text")
    seed_p.set_defaults(handler=seed)


def seed(args) -> int:
    from layers.settings import Settings
    from viewer.tile_seed import seed_tiles, store_bytes

    settings = Settings()
    seeds = seed_tiles(settings, codes=args.layers, min_zoom=args.min_zoom, max_zoom=args.max_zoom,
                       jobs=args.jobs, progress=ProgressPrinter("tiles"))
    size = store_bytes(settings)
    if args.format == "json":
        print_json({"layers": [s.as_dict() for s in seeds], "store_bytes": size})
        return 0
    print(f"{'layer':<6} {'version':>7} {'zooms':>6} {'built':>8} {'empty':>7} {'stored before':>13} "
          f"{'MB':>8} {'seconds':>8}")
    for s in seeds:
        print(f"{s.layer:<6} {s.version_id:>7} {s.min_zoom:>3}–{s.max_zoom:<2} {s.built:>8,} {s.empty:>7,} "
              f"{s.already_stored:>13,} {s.bytes / 1e6:>8.1f} {s.seconds:>8.1f}")
    built, empty = sum(s.built for s in seeds), sum(s.empty for s in seeds)
    print(f"seeded {len(seeds)} layers: {built:,} tiles built, {empty:,} empty (stored as empty rows), "
          f"{sum(s.already_stored for s in seeds):,} stored before and skipped; "
          f"{sum(s.bytes for s in seeds) / 1e6:,.1f} MB gzip in {sum(s.seconds for s in seeds):,.1f} s; "
          f"the store holds {size / 1e6:,.1f} MB")
    return 0
