"""Errors the service's own rules raise, independent of HTTP."""

from __future__ import annotations


class InvalidJob(ValueError):
    """A job definition breaks a rule; `field` names the offending field, if one does."""

    def __init__(self, field: str | None, message: str) -> None:
        if field is not None and not message.startswith(field):
            message = f"{field}: {message}"
        super().__init__(message)
        self.field = field
        self.message = message
