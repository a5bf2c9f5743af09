"""Multi-plan conflict detection: the rules file, feature selection, rule evaluation and the register.

Import the submodules themselves (``spatial.conflicts.rules``, ``.evaluate``, ...): this package
imports nothing, so that ``spatial.conflicts.terms`` is cheap to reach from the command line.
"""
