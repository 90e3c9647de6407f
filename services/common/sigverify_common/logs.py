"""Logging set-up shared by every service: one line per record, no voter data ever.

Handlers log identifiers (signature, batch, voter ids) and counts, never names,
addresses or birth dates.

aiokafka logs every failed reconnect attempt of every client (producer, consumer, its
group coordinator, the health probe), several times a second while the broker is gone:
``RepeatFilter`` lets one record of each kind through per minute and says how many like it
it held back. The broker's state itself is said once by ``kafka.BrokerWatch``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


class RepeatFilter(logging.Filter):
    """Rate-limits records of the loggers under ``prefixes`` (aiokafka's) that repeat.

    Records are alike when they come from the same logger, at the same level, with the same
    message template (``record.msg`` before its arguments: "Unable connect to node with id
    %s: %s" is one kind whatever the node and error). The first of a kind passes; the same
    kind again within ``window`` seconds is held back and counted; the first after the
    window passes with " [N more like it in the last 75s]" appended (the time since the
    last one that passed). A kind not seen before always passes at once: no new error is
    hidden, only its repetitions. Records of other loggers always pass.
    """

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka",), window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 512) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._window = window
        self._clock = clock
        self._max_kinds = max_kinds
        #: kind -> [when the last one passed, how many held back since]
        self._kinds: dict[tuple[str, int, str], list[float]] = {}

    def _ours(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._ours(record.name):
            return True
        now = self._clock()
        kind = (record.name, record.levelno, str(record.msg))
        seen = self._kinds.get(kind)
        if seen is not None and now - seen[0] < self._window:
            seen[1] += 1
            return False
        held = int(seen[1]) if seen is not None else 0
        since = now - seen[0] if seen is not None else 0.0
        if seen is None and len(self._kinds) >= self._max_kinds:
            # Kinds whose window is over are forgotten first (their count is lost: rare).
            self._kinds = {k: v for k, v in self._kinds.items() if now - v[0] < self._window}
        self._kinds[kind] = [now, 0]
        if held:
            record.msg = f"{record.getMessage()} [{held} more like it in the last {since:.0f}s]"
            record.args = None
        return True


def configure(service: str, level: str = "INFO") -> None:
    fmt = f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    # On the handler, not the logger: a logger's filters do not see its children's records.
    handler.addFilter(RepeatFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty about group membership at INFO.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
