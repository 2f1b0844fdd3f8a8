"""The heap freezer: freezes every step, reclaims once the frozen heap has grown enough."""

from __future__ import annotations

from fog_gateway.heap import Collector, HeapFreezer


class FakeGc:
    """A heap of ``alive`` objects plus ``garbage`` (cycles no longer referenced)."""

    def __init__(self) -> None:
        self.alive, self.garbage, self.frozen, self.collections = 0, 0, 0, 0

    def freeze(self) -> None:
        self.frozen = self.alive + self.garbage

    def unfreeze(self) -> None:
        self.frozen = 0

    def collect(self) -> int:
        self.collections += 1
        freed, self.garbage = self.garbage, 0
        return freed

    def collector(self) -> Collector:
        return Collector(freeze=self.freeze, unfreeze=self.unfreeze, collect=self.collect, frozen=lambda: self.frozen)


def test_a_steady_heap_is_frozen_without_full_collections() -> None:
    heap = FakeGc()
    freezer = HeapFreezer(reclaim_floor=1_000, collector=heap.collector())
    heap.alive = 800
    for _ in range(5):
        freezer.step()
    assert heap.frozen == 800
    assert heap.collections == 0


def test_growth_past_the_factor_reclaims_once_and_resets_the_baseline() -> None:
    heap = FakeGc()
    freezer = HeapFreezer(reclaim_growth=0.5, reclaim_floor=1_000, collector=heap.collector())
    heap.alive = 10_000
    freezer.step()  # frozen 0, under the floor: just freezes
    freezer.step()  # frozen 10,000 > max(floor, 0): the first reclaim sets the baseline
    assert (heap.collections, freezer.baseline) == (1, 10_000)
    heap.garbage = 4_000  # closed connections' cycles, frozen while alive
    freezer.step()
    freezer.step()
    assert heap.collections == 1, "40 % growth stays frozen"
    heap.garbage = 6_000
    freezer.step()  # freezes 16,000
    freezer.step()  # 16,000 > 15,000: reclaim
    assert heap.collections == 2
    assert (heap.garbage, heap.frozen, freezer.baseline) == (0, 10_000, 10_000)
