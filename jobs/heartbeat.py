"""A heartbeat: shows in the log and in the run history that the scheduler is alive."""

from __future__ import annotations

import logging
import os
import socket

from flask import current_app

logger = logging.getLogger(__name__)


def beat() -> None:
    """Log which process ran the beat; its run record says when."""
    logger.info(
        "Heartbeat from %s:%d (%s)", socket.gethostname(), os.getpid(), current_app.config["ENV_NAME"]
    )
