"""A running app survives a restart of its database server: the first request after
`blueprint db down && blueprint db up` is answered (pooled connections the server closed are replaced).

The test runs its own embedded cluster in a temporary data folder: stopping the shared one would
pull the database from under every other test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from layers.settings import DatabaseSettings, Settings, StorageSettings


@pytest.fixture
def own_cluster() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: when we are root the server runs as `postgres`, who cannot enter it (0700).
    folder = Path(tempfile.mkdtemp(prefix="bp-restart-"))
    folder.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(BLUEPRINT_DATA_DIR=str(folder / "data"), BLUEPRINT_DATABASE="restart")
    try:
        yield env
    finally:
        blueprint("db", "down", env=env, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def blueprint(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "api.cli.main", *args], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 or not check, result.stderr
    return result


def test_a_request_after_db_down_and_up_succeeds(own_cluster):
    blueprint("db", "up", env=own_cluster)
    settings = Settings(database=DatabaseSettings(DATABASE_URL=None, BLUEPRINT_DATABASE="restart"),
                        storage=StorageSettings(data_dir=own_cluster["BLUEPRINT_DATA_DIR"]))
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/layers").status_code == 200  # a connection is pooled
        assert "stopped" in blueprint("db", "down", env=own_cluster).stdout
        blueprint("db", "up", env=own_cluster)
        after = client.get("/api/v1/layers")
        assert after.status_code == 200, after.text
        assert client.get("/api/v1/layers").json() == after.json()
