"""Errors the service's own rules raise, independent of HTTP."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and what it expects."""


class InvalidJob(ValueError):
    """A job definition breaks a rule; `field` names the offending field, if one does."""

    def __init__(self, field: str | None, message: str) -> None:
        if field is not None and not message.startswith(field):
            message = f"{field}: {message}"
        super().__init__(message)
        self.field = field
        self.message = message


class ProtectedJob(Exception):
    """The service's own jobs (`jobservice-*`) can be paused and resumed, not changed or removed."""

    def __init__(self, job_id: str, action: str) -> None:
        self.job_id = job_id
        self.action = action
        self.message = (
            f"{job_id} is one of the service's own jobs: it can be paused and resumed, not {action}"
        )
        super().__init__(self.message)
