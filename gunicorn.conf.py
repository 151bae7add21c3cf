"""gunicorn settings for jobservice; gunicorn reads ./gunicorn.conf.py by itself.

Command-line flags still win (`make run` and the README pass --workers and --bind).

Requests gunicorn cannot hand to the app are answered by gunicorn itself: a request line
longer than `limit_request_line` (414), more than `limit_request_fields` headers or one
longer than `limit_request_field_size` (431), a malformed request (400). The limits below
fit the API with room to spare, and those answers are JSON like every other error of the
API (gunicorn writes an HTML page otherwise).
"""

import json
import socket

import gunicorn.util

# The longest URL the API takes: /scheduler/jobs/<id>/runs with a 191-character id, each
# character up to 4 bytes of UTF-8 sent as %XX (2292 bytes), and every filter of the runs
# query string: about 2.6 KB.
limit_request_line = 4094
# Clients send a dozen headers; proxies add a few.
limit_request_fields = 50
# A bearer token, a proxy's forwarding headers, a browser's cookies.
limit_request_field_size = 8190
# A stopping worker finishes its running jobs for this long (its queued runs go to the
# next leader at once); a run it cannot finish is closed `failed` within a few leases.
graceful_timeout = 30


def _json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error, answering JSON instead of an HTML page."""
    body = json.dumps({"error_message": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn.util.write_error = _json_error
