"""`blueprint demo`: generate the Jinan demo city and load it through the normal ingest path."""

from __future__ import annotations

import argparse
import sys
import time

from layers.errors import InvalidInput, SetupError

MAX_SCALE = 100


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a whole number from 1 to {MAX_SCALE}, not {text!r}") from None
    if not 1 <= value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"scale must be from 1 to {MAX_SCALE}, not {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number ≥ 0, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be ≥ 0, not {value}")
    return value


def register(commands) -> None:
    demo = commands.add_parser("demo", help="generate and load the Jinan demo city")
    demo.add_argument("--scale", type=_scale, default=1, help="multiply feature counts (10 → over 1,000,000)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.set_defaults(handler=run)


def run(args) -> int:
    try:
        from layers.demo import cached_city
        from layers.demo.load import load_demo
    except ImportError as exc:
        raise SetupError(f"a demo data package is missing ({exc.name}): run `make install`") from None
    from layers import db
    from layers.settings import Settings

    settings = Settings()
    engine = db.make_engine(settings, start=False)  # the database must be up: one-line error if not
    out_dir = settings.storage.data_dir / "demo" / f"scale{args.scale}-seed{args.seed}"
    started = time.perf_counter()
    print(f"generating the Jinan demo city (scale {args.scale}, seed {args.seed}) in {out_dir}", file=sys.stderr)
    try:
        manifest = cached_city(out_dir, scale=args.scale, seed=args.seed,
                               progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    except FileNotFoundError as exc:
        raise SetupError(f"demo input data not found ({exc.filename}): run `make install`") from None
    generated = time.perf_counter() - started
    print(f"generated {len(manifest.layers)} vector layers ({manifest.feature_count:,} features) and "
          f"{len(manifest.rasters)} rasters in {generated:.1f} s; loading", file=sys.stderr)
    loaded = load_demo(engine, settings, out_dir,
                       progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    engine.dispose()
    if not loaded.reports:
        raise InvalidInput("the generator wrote no layers")
    fresh = sum(not r.unchanged for r in loaded.reports)
    print(f"demo city loaded: {len(loaded.reports)} layers ({fresh} new versions, "
          f"{len(loaded.reports) - fresh} unchanged), {loaded.features:,} features; "
          f"generated in {generated:.1f} s, loaded in {loaded.seconds:.1f} s; "
          f"manifest {out_dir / 'manifest.json'}")
    return 0
