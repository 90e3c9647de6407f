"""The garbage collector's set-up for long-running services (``sigverify_common.heap``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import numpy as np
import pytest

from sigverify_common import heap


@pytest.fixture
def restored() -> Iterator[None]:
    """The collector as it was before the test (thresholds, callbacks, nothing frozen)."""
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks


class _Index:
    """Something shaped like a roll index: arrays, and a cycle back to itself."""

    def __init__(self) -> None:
        self.arrays = {"voters": np.zeros(1_000_000, dtype=np.int32)}
        self.cache: dict[str, object] = {"owner": self}


def _gc_seconds() -> float:
    return sum(s.value for m in heap.GC_SECONDS.collect() for s in m.samples
               if s.name.endswith("_total"))


def test_tune_raises_the_young_threshold_once_and_counts_the_collectors_time(
        restored: None) -> None:
    heap.tune()
    heap.tune()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    assert gc.callbacks.count(heap._timed) == 1
    before = _gc_seconds()
    gc.collect()
    assert _gc_seconds() > before


def test_settle_freezes_what_is_alive(restored: None) -> None:
    kept = _Index()
    assert any(o is kept for o in gc.get_objects())
    frozen = heap.settle()
    assert frozen > 0 and frozen == gc.get_freeze_count()
    # What was frozen is out of the collector's walks (of every generation).
    assert all(o is not kept for o in gc.get_objects())


def test_an_index_retired_between_two_settles_is_collected(restored: None) -> None:
    """A retired roll version's index, frozen while it served, is not kept for ever: the
    next settle gives the frozen objects back to the collector first (a plain
    ``gc.freeze()`` would keep its cycle, and its arrays, until the process ends)."""
    old = _Index()
    gone = weakref.ref(old)
    heap.settle()
    del old
    gc.collect()
    assert gone() is not None  # frozen: a collection does not see it
    heap.settle()
    assert gone() is None
