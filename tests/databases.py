"""Names of the tests' own databases.

Every name starts with ``BLUEPRINT_TEST_DATABASE`` (default ``blueprint_test``), so two test runs
on one server (two checkouts, or two people) can keep out of each other's way by setting it.
"""

from __future__ import annotations

import os

PREFIX = os.environ.get("BLUEPRINT_TEST_DATABASE", "blueprint_test")


def database_name(purpose: str = "") -> str:
    """``<prefix>`` or ``<prefix>_<purpose>``.

    Examples
    --------
    >>> database_name("site").endswith("_site")
    True
    """
    return f"{PREFIX}_{purpose}" if purpose else PREFIX
