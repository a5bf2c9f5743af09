"""`blueprint conflicts run|list|show|runs|export|status` and `blueprint synthesize`."""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING

from api.cli.output import ProgressPrinter, print_json
from layers.errors import NotFound
from spatial.conflicts.terms import EXPORT_FORMATS, SETTABLE, SEVERITIES, STATUSES

if TYPE_CHECKING:
    from layers.settings import Settings
    from layers.store import VersionInfo
    from spatial.conflicts.listing import Filters


def register(commands) -> None:
    group = commands.add_parser("conflicts", help="multi-plan conflict overlay and the conflict register")
    sub = group.add_subparsers(dest="conflicts_command", required=True, metavar="ACTION")

    run_p = sub.add_parser("run", help="evaluate every rule on the current layer versions")
    run_p.add_argument("--rules", help="a rules file (default spatial/rules/conflicts.yaml)")
    run_p.add_argument("--threads", type=int, help="worker threads (default: the machine's cores)")
    run_p.add_argument("--format", choices=("text", "json"), default="text")
    run_p.set_defaults(handler=run)

    list_p = sub.add_parser("list", help="the conflict register (live conflicts unless --status closed)")
    _filter_arguments(list_p)
    list_p.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    list_p.add_argument("--format", choices=("text", "json"), default="text")
    list_p.set_defaults(handler=list_)

    show_p = sub.add_parser("show", help="one conflict with attributes and history")
    show_p.add_argument("id", type=int)
    show_p.set_defaults(handler=show)

    runs_p = sub.add_parser("runs", help="the conflict runs, or one run in full")
    runs_p.add_argument("id", type=int, nargs="?")
    runs_p.add_argument("--format", choices=("text", "json"), default="text")
    runs_p.set_defaults(handler=runs)

    export_p = sub.add_parser("export", help="write the register to GeoPackage, GeoJSON or Excel")
    export_p.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the file suffix")
    export_p.add_argument("-o", "--output", required=True, help="output file")
    _filter_arguments(export_p)
    export_p.set_defaults(handler=export)

    status_p = sub.add_parser("status", help="move a conflict along open → assigned → resolved | accepted")
    status_p.add_argument("id", type=int)
    status_p.add_argument("--set", dest="status", required=True, choices=SETTABLE)
    status_p.add_argument("--plan", choices=("a", "b"), help="for resolved: which plan was adjusted")
    status_p.add_argument("--note", help="why (required to accept an exception)")
    status_p.add_argument("--by", help="who (default: your login name)")
    status_p.set_defaults(handler=status)

    synth = commands.add_parser("synthesize", help="build the consolidated blueprint (layer 3105)")
    synth.add_argument("--export", metavar="FILE", help="also write it to FILE (.gpkg, .geojson or .xlsx)")
    synth.add_argument("--rules", help="a rules file (default spatial/rules/conflicts.yaml)")
    synth.add_argument("--format", choices=("text", "json"), default="text")
    synth.add_argument("--force", action="store_true",
                       help="build even when the rules and the layer versions it reads are unchanged")
    synth.set_defaults(handler=synthesize)


def _filter_arguments(parser) -> None:
    parser.add_argument("--type", help="rule code, e.g. CT03")
    parser.add_argument("--severity", choices=SEVERITIES)
    parser.add_argument("--district", help="district code, e.g. 370102")
    parser.add_argument("--status", choices=STATUSES)
    parser.add_argument("--run", type=int, help="only the conflicts this run found")


def _filters(conn, args) -> Filters:
    from spatial.conflicts.query import checked_filters

    return checked_filters(conn, rule=args.type, severity=args.severity, district=args.district,
                           status=args.status, run_id=args.run)


def run(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts.run import run_conflicts

    settings = Settings()
    engine = db.make_engine(settings)
    try:
        result = run_conflicts(engine, settings, rules_path=args.rules, threads=args.threads,
                               progress=ProgressPrinter("conflicts"))
    finally:
        engine.dispose()
    if args.format == "json":
        print_json({"run_id": result.run_id, "changes": result.changes.as_dict(), "summary": result.summary,
                    "timings": result.timings, "versions": result.versions, "not_evaluated": result.not_evaluated})
        return 0
    print_run_text(result.run_id, result.summary, result.timings, result.versions, result.not_evaluated)
    return 0


def print_run_text(run_id: int, summary: dict, timings: dict, versions: dict, not_evaluated: list) -> None:
    """The run report: totals, changes, by type (with per-rule seconds), by district, timings."""
    total, changes = summary["total"], summary.get("changes", {})
    print(f"conflict run {run_id}: {len(summary['by_type'])} rules evaluated on {len(versions)} layers, "
          f"{len(not_evaluated)} not evaluated")
    print(f"  {total['count']:,} conflicts, {total['area_m2']:,.1f} m²; register: {changes.get('kept', 0):,} kept, "
          f"{changes.get('closed', 0):,} closed, {changes.get('new', 0):,} new")
    print("by type:")
    for code, row in summary["by_type"].items():
        seconds = timings.get("rules", {}).get(code, 0.0)
        print(f"  {code} {row['severity']:<8} {row['count']:>7,} {row['area_m2']:>16,.1f} m²  {seconds:7.3f} s  "
              f"{row['name_zh']}")
    print("by district:")
    for code, row in summary["by_district"].items():
        types = ", ".join(f"{k} {v:,}" for k, v in row["by_type"].items())
        print(f"  {code:<8} {row['name']:<10} {row['count']:>7,} {row['area_m2']:>16,.1f} m²  ({types})")
    for item in not_evaluated:
        print(f"not evaluated: {item['rule']}: {item['reason']}")
    read = timings.get("read_wall", sum(timings.get("read", {}).values()))
    rules = sum(timings.get("rules", {}).values())
    print(f"timings: read {read:.2f} s, rules {rules:.2f} s, districts {timings.get('districts', 0):.2f} s, "
          f"attributes {timings.get('attributes', 0):.2f} s, write {timings.get('write', 0):.2f} s, "
          f"total {timings.get('total', 0):.2f} s")


def list_(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts.listing import list_conflicts

    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.connect() as conn:
            items, total = list_conflicts(conn, _filters(conn, args), page=1, page_size=max(args.limit, 1),
                                          geometry=False)
    finally:
        engine.dispose()
    if args.format == "json":
        print_json({"items": items, "total": total})
        return 0
    for c in items:
        b = f"{c['b_layer']}:{c['b_fid']}" if c["b_fid"] is not None else f"outside {c['b_layer']}"
        print(f"{c['id']:>7} {c['rule']} {c['severity']:<8} {c['status']:<9} {c['area_m2']:>14,.1f} m²  "
              f"{c['district'] or '-':<7} {c['a_layer']}:{c['a_fid']} × {b}")
    print(f"{len(items):,} of {total:,} conflicts shown", file=sys.stderr)
    return 0


def show(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts.query import conflict_detail

    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.connect() as conn:
            item = conflict_detail(conn, args.id)
    finally:
        engine.dispose()
    print_json(item)
    return 0


def runs(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts.listing import get_run, list_runs

    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.connect() as conn:
            if args.id is not None:
                found = get_run(conn, args.id)
                if found is None:
                    raise NotFound(f"no conflict run {args.id}")
            else:
                items = list_runs(conn)
    finally:
        engine.dispose()
    if args.id is not None:
        if args.format == "json":
            print_json(found)
        else:
            print_run_text(found["id"], found["summary"], found["timings"], found["versions"], found["not_evaluated"])
        return 0
    if args.format == "json":
        print_json(items)
        return 0
    for r in items:
        t = r["total"]
        ch = r["changes"]
        print(f"run {r['id']:>4} {r['started_at'][:19]}  {t.get('count', 0):>7,} conflicts "
              f"{t.get('area_m2', 0):>16,.1f} m²  kept {ch.get('kept', 0):,} closed {ch.get('closed', 0):,} "
              f"new {ch.get('new', 0):,}  not evaluated: {', '.join(r['not_evaluated']) or 'none'}")
    return 0


def export(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts.export import export_conflicts

    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.connect() as conn:
            count = export_conflicts(conn, args.output, fmt=args.format, filters=_filters(conn, args))
    finally:
        engine.dispose()
    print(f"wrote {count:,} conflicts to {args.output}")
    return 0


def status(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.conflicts import lifecycle

    by = args.by or getpass.getuser()
    engine = db.make_engine(Settings(), start=False)
    try:
        with engine.begin() as conn:
            event = lifecycle.set_status(conn, args.id, args.status, adjusted_plan=args.plan, note=args.note, by=by)
    finally:
        engine.dispose()
    plan = f", plan {event['adjusted_plan']} adjusted" if event["adjusted_plan"] else ""
    print(f"conflict {args.id}: {event['from']} → {event['status']}{plan} by {event['by']} at {event['at'][:19]}")
    return 0


def synthesize(args) -> int:
    from layers import db
    from layers.settings import Settings
    from spatial.blueprint import export_blueprint, unchanged_blueprint
    from spatial.blueprint import synthesize as build
    from spatial.conflicts.export import checked_output

    if args.export:
        checked_output(args.export)  # a bad file name fails before the work
    settings = Settings()
    engine = db.make_engine(settings)
    try:
        stored = None if args.force else unchanged_blueprint(engine, rules_path=args.rules)
        if stored is not None:
            return _unchanged_blueprint(engine, settings, stored, args)
        frame, report = build(engine, settings, rules_path=args.rules, progress=ProgressPrinter("synthesize"))
    finally:
        engine.dispose()
    if args.export:
        export_blueprint(frame, args.export)
    if args.format == "json":
        print_json(report.as_dict())
        return 0
    gap = report.city_area_m2 - report.area_m2
    print(f"blueprint: layer 3105 v{report.version}, {report.features:,} features covering "
          f"{report.area_m2:,.1f} m² of the city's {report.city_area_m2:,.1f} m² (from {report.city_source}; "
          f"difference {gap:.3g} m²)")
    for cls, area in sorted(report.by_class.items(), key=lambda kv: -kv[1]):
        print(f"  {cls:<13} {area:>18,.1f} m²  {100 * area / report.city_area_m2:5.1f}%")
    print("by source: " + ", ".join(f"{k} {v:,.0f} m²" for k, v in report.by_source.items()))
    for item in report.skipped:
        print(f"not used: {item['reason']}")
    print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in report.timings.items()))
    if args.export:
        print(f"wrote {report.features:,} features to {args.export}")
    return 0


def _unchanged_blueprint(engine, settings: Settings, stored: VersionInfo, args) -> int:
    """Say the blueprint is up to date (and export the stored one when asked) instead of rebuilding it."""
    from layers import frames
    from spatial.blueprint import COLUMNS, export_blueprint

    if args.export:
        with engine.connect() as conn:
            frame = frames.read_features(conn, version_id=stored.id, srid=settings.storage.storage_srid)
        export_blueprint(frame[[*COLUMNS, "geometry"]], args.export)
    if args.format == "json":
        print_json({"unchanged": True, **stored.as_dict()})
        return 0
    print(f"blueprint unchanged: layer 3105 v{stored.version} ({stored.feature_count:,} features) was built from "
          f"these rules and the layer versions current now; --force builds it again")
    if args.export:
        print(f"wrote {stored.feature_count:,} features to {args.export}")
    return 0
