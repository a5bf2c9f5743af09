"""`blueprint catalogue validate|list`."""

from __future__ import annotations

from pathlib import Path

from api.cli.output import print_json


def register(commands) -> None:
    group = commands.add_parser("catalogue", help="the thematic-layer catalogue")
    sub = group.add_subparsers(dest="catalogue_command", required=True, metavar="ACTION")
    validate_p = sub.add_parser("validate", help="check the catalogue against its schema")
    validate_p.add_argument("path", nargs="?", type=Path, help="default: the platform's catalogue")
    validate_p.set_defaults(handler=validate)
    list_p = sub.add_parser("list", help="print the major/middle/minor hierarchy")
    list_p.add_argument("--format", choices=("text", "json"), default="text")
    list_p.set_defaults(handler=list_)


def validate(args) -> int:
    from layers.catalogue import CATALOGUE_PATH, load_catalogue

    path = args.path or CATALOGUE_PATH
    majors, middles, minors = load_catalogue(path).counts()
    print(f"catalogue valid: {majors} major, {middles} middle, {minors} minor classes ({path})")
    return 0


def list_(args) -> int:
    from layers.catalogue import load_catalogue

    catalogue = load_catalogue()
    if args.format == "json":
        print_json(catalogue.hierarchy())
        return 0
    for major in catalogue.hierarchy():
        print(f"{major['code']} {major['name_zh']} {major['name_en']}")
        for middle in major["middles"]:
            print(f"  {middle['code']} {middle['name_zh']} {middle['name_en']}")
            for minor in middle["minors"]:
                print(f"    {minor['code']} {minor['name_zh']} {minor['name_en']} "
                      f"[{minor['geometry_type']}, {minor['control_level']}]")
    return 0
