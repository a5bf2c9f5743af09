"""The `blueprint` command line: catalogue commands and the embedded database."""

import json
import os
import subprocess
import sys

import sqlalchemy as sa

from layers import db
from layers.catalogue import load_catalogue
from tests.databases import database_name


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_catalogue_validate_and_list_json():
    result = run("catalogue", "validate")
    assert result.returncode == 0 and "4 major, 11 middle" in result.stdout
    listed = run("catalogue", "list", "--format", "json")
    assert json.loads(listed.stdout) == load_catalogue().hierarchy()


def test_the_parser_is_built_without_the_heavy_libraries():
    probe = ("import sys; from api.cli.main import build_parser; build_parser(); "
             "print(' '.join(m for m in ('geopandas', 'pandas', 'shapely', 'sqlalchemy', 'psycopg', 'pyarrow', "
             "'numpy', 'pydantic', 'jsonschema') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_a_reader_that_stops_early_ends_the_command_quietly():
    with subprocess.Popen([sys.executable, "-m", "api.cli.main", "catalogue", "list", "--format", "json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # gone before the command writes, as `| head` may be
        stderr = proc.stderr.read().decode()
        assert proc.wait() == 141, stderr
    assert stderr == ""


def test_catalogue_validate_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "catalogue.yaml"
    broken.write_text("majors: [{code: '1'}]\n")
    result = run("catalogue", "validate", str(broken))
    assert result.returncode == 2
    assert result.stderr.startswith("blueprint: error: catalogue invalid") and result.stderr.count("\n") == 1


def test_db_up_is_idempotent_and_url_is_stable(settings, engine):
    env = {"BLUEPRINT_DATABASE": settings.database.embedded_database}
    first = run("db", "up", env=env)
    url_after_first = run("db", "url", env=env).stdout
    second = run("db", "up", env=env)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "schema at revision" in second.stdout
    assert url_after_first.strip() and run("db", "url", env=env).stdout == url_after_first


def test_db_up_creates_and_migrates_the_named_database(settings):
    named = settings.on_database(database_name("db_up"))
    url = db.database_url(named)
    db.drop_database(url)
    env = ({"DATABASE_URL": named.database.database_url} if named.database.database_url
           else {"BLUEPRINT_DATABASE": named.database.embedded_database})
    try:
        result = run("db", "up", env=env)
        assert result.returncode == 0, result.stderr
        engine = db.make_engine(named, start=False)
        with engine.connect() as conn:
            layers = conn.execute(sa.text("SELECT count(*) FROM layer")).scalar_one()
        engine.dispose()
        assert layers == len(load_catalogue().minors) and f"{layers} catalogue layers" in result.stdout
    finally:
        db.drop_database(url)
