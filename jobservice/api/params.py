"""Query-string parameters, checked: a bad one is a 400 naming it."""

from __future__ import annotations

from flask import request

from .errors import ApiError


def int_arg(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and minimum <= int(raw) <= maximum):
        raise ApiError(400, f"{name} must be a whole number from {minimum} to {maximum}", name)
    return int(raw)
