"""The embedded server's user must be able to reach its data folder; if not, one clear line."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from layers.embedded import _check_reachable
from layers.errors import SetupError

STRANGER = pwd.struct_passwd(("stranger", "x", 61234, 61234, "", "/", "/bin/false"))


def test_a_closed_folder_above_the_data_is_named(tmp_path):
    closed = tmp_path / "home"
    data = closed / "checkout" / ".blueprint"
    data.mkdir(parents=True)
    closed.chmod(0o700)
    try:
        with pytest.raises(SetupError, match=f"cannot enter {closed}:"):
            _check_reachable(data, STRANGER)
    finally:
        closed.chmod(0o755)


def test_world_traversable_folders_pass():
    usr = Path("/usr/share")  # 0755 on any Debian
    assert all(f.stat().st_mode & 0o001 for f in (usr, *usr.parents))
    _check_reachable(usr, STRANGER)  # no error
