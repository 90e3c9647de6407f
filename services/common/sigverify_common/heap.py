"""Python's cyclic garbage collector in a long-running service.

A service keeps a large heap that lives as long as the process (the modules, the gRPC
and Kafka clients, a matcher's roll index and name tables), and each batch makes many
short-lived containers (records, results, candidates, events). With CPython's default
thresholds a young collection runs every 700 new containers and, every few batches, a
full one walks the whole heap again; in the matcher that was a third of the time spent
building a batch's results (the 300,000 objects of a 100,000-voter index and its tables,
walked twice a petition's 20,000 signatures).

So: ``tune`` raises the young generation's threshold (fewer, slightly larger young
collections; garbage with cycles waits a little longer), and ``settle`` collects once and
then moves every object still alive out of the collector's sight (``gc.freeze``): the
collector then walks only what was made since. ``settle`` first gives the frozen objects
back (``gc.unfreeze``), so whatever became garbage since the last call (a retired roll
version's index) is still collected. The time spent collecting is a counter per
generation (``sigverify_gc_seconds_total``), which ``sigverify bench`` reads beside each
process's CPU time.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Counter

#: Containers allocated (net) before a young collection (CPython's default is 700).
YOUNG_THRESHOLD = 10_000

GC_SECONDS = Counter("sigverify_gc_seconds_total",
                     "Seconds spent in Python's cyclic garbage collector", ["generation"])

_started: list[float] = []


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        GC_SECONDS.labels(str(info.get("generation", ""))).inc(
            time.perf_counter() - _started.pop())


def tune() -> None:
    """At a service's start: the thresholds above, and the collector's time counted."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    if _timed not in gc.callbacks:
        gc.callbacks.append(_timed)


def settle() -> int:
    """Once a service's long-lived objects exist (after start-up, after a new roll index):
    collect, then freeze what survives. Returns the number of objects frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
