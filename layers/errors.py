"""Domain errors. Each carries a message safe to show a user; api/errors.py maps them to HTTP."""

from __future__ import annotations


class BlueprintError(Exception):
    """Base of every error the platform reports to a user instead of a stack trace."""

    title = "Request failed"

    def __init__(self, message: str, *, detail: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}


class NotFound(BlueprintError):
    title = "Not found"


class InvalidInput(BlueprintError):
    """The user's input (file, geometry, parameter) is wrong; nothing was changed."""

    title = "Invalid input"


class InputTooLarge(InvalidInput):
    title = "Input too large"


class CatalogueError(BlueprintError):
    title = "Invalid catalogue"


class DatabaseUnavailable(BlueprintError):
    title = "Database unavailable"


class SetupError(BlueprintError):
    """Something the platform needs is not installed or not set up; the message says what to do."""

    title = "Set-up incomplete"
