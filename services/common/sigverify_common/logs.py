"""Logging set-up shared by every service: one line per record, no voter data ever.

Handlers log identifiers (signature, batch, voter ids) and counts, never names,
addresses or birth dates.
"""

from __future__ import annotations

import logging
import sys


def configure(service: str, level: str = "INFO") -> None:
    fmt = f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty about group membership at INFO.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
