"""`blueprint db up|down|url|migrate`."""

from __future__ import annotations

import time


def register(commands) -> None:
    group = commands.add_parser("db", help="the PostGIS database (embedded unless DATABASE_URL)")
    sub = group.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    sub.add_parser("up", help="create (once), start and migrate the database").set_defaults(handler=up)
    sub.add_parser("down", help="stop the embedded database").set_defaults(handler=down)
    sub.add_parser("url", help="print the database URL").set_defaults(handler=url)


def up(args) -> int:
    import sqlalchemy as sa

    from layers import db, embedded
    from layers.settings import Settings

    settings = Settings()
    started = time.perf_counter()
    if settings.database.database_url:
        where = "DATABASE_URL"
        url_text = settings.database.database_url
    else:
        cluster = db.embedded_cluster(settings)
        created, started_now = embedded.start(cluster)
        state = "created and started" if created else ("started" if started_now else "already running")
        where = f"embedded cluster {state} in {cluster.pgdata}"
        url_text = cluster.url(settings.database.embedded_database)
    revision = db.migrate(settings, url_text)
    engine = db.make_engine(settings)
    with engine.connect() as conn:
        layers = conn.execute(sa.text("SELECT count(*) FROM layer")).scalar_one()
        postgis = conn.execute(sa.text("SELECT postgis_lib_version()")).scalar_one()
    engine.dispose()
    print(f"database up: {where}; schema at revision {revision}; PostGIS {postgis}; "
          f"{layers} catalogue layers; storage EPSG:{settings.storage.storage_srid}; "
          f"{time.perf_counter() - started:.1f} s")
    return 0


def down(args) -> int:
    from layers import db, embedded
    from layers.settings import Settings

    settings = Settings()
    if settings.database.database_url:
        print("DATABASE_URL is set: the platform does not manage that server")
        return 0
    stopped = embedded.stop(db.embedded_cluster(settings))
    print("embedded database stopped" if stopped else "embedded database was not running")
    return 0


def url(args) -> int:
    from layers import db
    from layers.settings import Settings

    print(db.database_url(Settings(), start=False))
    return 0
