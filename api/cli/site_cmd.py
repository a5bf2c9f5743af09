"""CLI commands (being built)."""


def register(commands) -> None:
    """No commands yet."""
