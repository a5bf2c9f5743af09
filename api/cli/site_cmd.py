"""`blueprint site check|show` and `blueprint assess`: the site check and regional assessment."""

from __future__ import annotations

import sys
from pathlib import Path

from api.cli.output import print_json


def register(commands) -> None:
    site = commands.add_parser("site", help="site checks: constraints, planning conditions, assessments")
    sub = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    check_p = sub.add_parser("check", help="what applies to the site in FILE (stored, like the API's checks)")
    check_p.add_argument("file", help="GeoJSON (geometry, Feature, FeatureCollection or an API request body), "
                                      "GeoPackage, Shapefile, FlatGeobuf or GeoParquet")
    check_p.add_argument("--crs", help="CRS of a GeoJSON file's coordinates (default EPSG:4326)")
    check_p.add_argument("--as-of", help="check against the layer versions in force on YYYY-MM-DD")
    check_p.add_argument("--buffer-m", type=float, help="also check this margin around the site (m)")
    check_p.add_argument("--format", choices=("text", "json"), default="text")
    check_p.set_defaults(handler=check)
    show_p = sub.add_parser("show", help="a stored check by its id")
    show_p.add_argument("check_id")
    show_p.add_argument("--format", choices=("json", "html"), default="json")
    show_p.add_argument("-o", "--output", help="write to this file instead of standard output")
    show_p.set_defaults(handler=show)
    assess_p = commands.add_parser("assess", help="regional assessment of an assessed zone (layer 3201)")
    assess_p.add_argument("zone_id")
    assess_p.add_argument("--as-of", help="read the layer versions in force on YYYY-MM-DD")
    assess_p.add_argument("--valid-years", type=int, help="validity of the results (default from the rules)")
    assess_p.add_argument("--type", action="append", dest="types", metavar="TYPE",
                          help="assessment type to run (repeatable; default all)")
    assess_p.add_argument("--format", choices=("text", "json"), default="text")
    assess_p.add_argument("--force", action="store_true",
                          help="assess again even where the stored result was made from the same inputs")
    assess_p.set_defaults(handler=assess)


def check(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.site import check_site, parse_request
    from spatial.site.files import read_site_file

    settings = Settings()
    body = read_site_file(args.file, storage_srid=settings.storage.storage_srid)
    for key, value in (("crs", args.crs), ("as_of", args.as_of), ("buffer_m", args.buffer_m)):
        if value is not None:
            body[key] = value
    request = parse_request(body, storage_srid=settings.storage.storage_srid,
                            max_vertices=settings.server.max_site_vertices)
    engine = db.make_engine(settings, start=False)
    try:
        with engine.connect() as conn:
            result = check_site(conn.execution_options(isolation_level="AUTOCOMMIT"), request).result
    finally:
        engine.dispose()
    if args.format == "json":
        print_json(result)
    else:
        print(summary(result))
    return 0


def show(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.site.document import conditions_html
    from spatial.site.records import read_check, read_check_json

    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.connect() as conn:
            text = (conditions_html(read_check(conn, args.check_id)) if args.format == "html"
                    else read_check_json(conn, args.check_id).decode())
    finally:
        engine.dispose()
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({len(text.encode()):,} bytes)", file=sys.stderr)
    else:
        print(text)
    return 0


def assess(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.assessment import Staleness, assess_zone, stale_types
    from spatial.site.request import parse_date

    settings = Settings()
    as_of = parse_date(args.as_of)
    engine = db.make_engine(settings, start=False)
    try:
        staleness = Staleness(unchanged=[], stale=[])
        if not args.force:
            with engine.connect() as conn:
                staleness = stale_types(conn, args.zone_id, as_of=as_of, valid_years=args.valid_years,
                                        types=args.types)
        run = None
        if staleness.stale or not staleness.unchanged:  # nothing stored to reuse: assess (an unknown zone fails)
            run = assess_zone(engine, settings, args.zone_id, as_of=as_of, valid_years=args.valid_years,
                              types=staleness.stale or args.types,
                              progress=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    finally:
        engine.dispose()
    if args.format == "json":
        print_json({**(run or {"zone": {"zone_id": args.zone_id}, "results": []}), "unchanged": staleness.unchanged})
        return 0
    if staleness.unchanged:
        print(_unchanged_line(args.zone_id, staleness))
    if run is not None:
        _print_run(run)
    return 0


def _unchanged_line(zone_id: str, staleness) -> str:
    kept = ", ".join(f"{u['type']} {u['result']} ({u['layer']} v{u['version']})" for u in staleness.unchanged)
    rest = f"{len(staleness.stale)} to assess" if staleness.stale else "--force assesses them again"
    return (f"zone {zone_id}: {len(staleness.unchanged)} stored results unchanged, made with these rules from the "
            f"layer versions in force: {kept}; {rest}")


def _print_run(run: dict) -> None:
    zone = run["zone"]
    print(f"zone {zone['zone_id']} {zone['name'] or ''}: {zone['area_m2'] / 1e6:,.2f} km², results valid "
          f"{run['valid_from']} to {run['valid_to']}")
    for r in run["results"]:
        stored = f"  → layer {r['stored']['layer']} v{r['stored']['version']}" if r.get("stored") else ""
        print(f"  {r['type']:<24} {r['result']:<13}{stored}")
        for s in r.get("statistics") or []:
            if s.get("area_m2") is not None:
                print(f"      {s['layer']} {_where(s)}: {s['area_m2']:,.0f} m² ({s['share']:.1%})"
                      f"{' ' + s['effect'] if s.get('effect') else ''}")
        if r.get("reason"):
            print(f"      {r['reason']}")
    counts = {k: sum(r["result"] == k for r in run["results"]) for k in ("pass", "conditional", "fail", "not_assessed")}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f"; {run['timings_ms']}")


def _where(stat: dict) -> str:
    if stat.get("above") is not None:
        return f"> {stat['above']:g}"
    return " ".join(f"{k}∈{{{','.join(v)}}}" for k, v in (stat.get("where") or {}).items())


def summary(r: dict) -> str:
    """A site check in a few lines of text, numbers first."""
    v = r["verdict"]
    site = r["site"]
    lines = [f"site check {r['check_id']}: {v['level'].upper()}{'' if v['complete'] else ' (incomplete)'} — "
             f"{site['area_m2']:,.0f} m² at {site['centroid_lonlat'][0]:.5f}, {site['centroid_lonlat'][1]:.5f}; "
             f"{len(r['constraints'])} layers: {v['hits']} hit, {v['clear']} clear, {v['unknown']} unknown"]
    for reason in v["reasons"]:
        area = f"{reason['area_m2']:>10,.0f} m² {reason['share']:6.1%}" if reason["area_m2"] is not None else " " * 20
        lines.append(f"  {reason['level']:<11} {reason['layer']} {reason['name_en']:<34} {area}  {reason['relation']}")
    pc = r["planning_conditions"]
    if pc.get("parcels"):
        b = pc["binding"]
        parts = [f"land use {b['land_use']['value'] or 'mixed ' + '/'.join(u['value'] for u in b['land_use']['uses'])}"]
        for field, item in b.items():
            if field != "land_use" and item["value"] is not None:
                parts.append(f"{field} {'≤' if item['bind'] == 'min' else '≥'} {item['value']:g}")
        lines.append(f"planning conditions ({pc['parcels_total']} parcel(s), {pc['status']}): " + "; ".join(parts))
        lines.extend(f"  contradiction: {c['reason']}" for c in pc.get("contradictions") or [])
    else:
        lines.append(f"planning conditions: {pc.get('status')} ({pc.get('reason')})")
    for s in pc.get("setbacks") or []:
        near = f", nearest {s['nearest_m']:,.1f} m" if s.get("nearest_m") is not None else ""
        lines.append(f"  setback {s['label_en']}: {s['setback_m']:g} m — {s['status']}{near}")
    elev, slope = r["terrain"]["elevation"]["statistics"], r["terrain"]["slope"]["statistics"]
    if elev:
        lines.append(f"terrain: elevation {elev['min']}–{elev['max']} m (mean {elev['mean']})"
                     + (f"; slope mean {slope['mean']}°, {slope['above'][0]['share']:.1%} steeper than "
                        f"{slope['above'][0]['threshold']:g}°" if slope and slope["above"] else ""))
    a = r["assessments"]
    lines.append("assessments covered: " + (", ".join(f"{c['type']} ({c['zone_id']}, {c['result']}, to {c['valid_to']})"
                                                    for c in a["covered"]) or "none")
                 + f"; not covered: {len(a['not_covered'])}")
    lines.append(f"timings: {r['timings_ms']['total']:.1f} ms; document: blueprint site show {r['check_id']} "
                 f"--format html -o conditions.html")
    return "\n".join(lines)
