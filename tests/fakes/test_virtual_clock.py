"""The virtual clock: processes wake in time order, whether a sleep parks or just moves on."""

from __future__ import annotations

import gc
import weakref

import pytest

from tests.fakes.virtual_clock import Simulation, SimulationError


def test_sleepers_and_callbacks_run_in_time_order_and_ties_in_the_order_they_were_scheduled() -> (
    None
):
    sim = Simulation()
    seen: list[tuple[float, str]] = []

    def sleeper(name: str, pauses: list[float]) -> None:
        for pause in pauses:
            sim.sleep(pause)
            seen.append((sim.now, name))

    sim.spawn(sleeper, "a", [0.001, 0.001, 5.0])  # alone until t=1: moves on without parking
    sim.spawn(sleeper, "b", [1.0, 0.0, 4.002])
    sim.call_at(2.0, lambda: seen.append((sim.now, "callback")))
    sim.run()
    assert seen == [
        (0.001, "a"),
        (0.002, "a"),
        (1.0, "b"),
        (1.0, "b"),  # a sleep of 0 with nothing else due now
        (2.0, "callback"),
        (5.002, "a"),  # due at the same time as b's last wake-up, and scheduled first
        (5.002, "b"),
    ]
    assert sim.events == 9  # every wake-up counts, parked or not


def test_a_run_until_a_time_stops_there_and_the_sleeper_wakes_in_the_next_run() -> None:
    sim = Simulation()
    woke: list[float] = []

    def sleeper() -> None:
        sim.sleep(0.5)
        sim.sleep(1.0)
        woke.append(sim.now)

    sim.spawn(sleeper)
    sim.run(until=1.0)
    assert (sim.now, woke) == (1.0, [])
    sim.run()
    assert woke == [1.5]


def test_a_process_that_stops_the_run_goes_no_further_in_it() -> None:
    sim = Simulation()
    steps: list[float] = []

    def stopper() -> None:
        sim.stop()
        sim.sleep(0.1)
        steps.append(sim.now)

    sim.spawn(stopper)
    sim.run()
    assert steps == []
    sim.run()
    assert steps == [0.1]


def test_a_process_that_never_stops_sleeping_is_caught_by_the_event_limit() -> None:
    sim = Simulation()

    def forever() -> None:
        while True:
            sim.sleep(0.01)

    sim.spawn(forever)
    with pytest.raises(SimulationError):
        sim.run(max_events=1_000)
    assert sim.events <= 1_001


def test_a_closed_run_ends_its_parked_processes_and_frees_all_they_held() -> None:
    class Held:
        pass

    sim = Simulation()
    held = Held()
    unwound: list[str] = []

    def poller(state: Held) -> None:
        try:
            while True:  # a long poll that never ends, as an event source mapping's
                sim.sleep(20.0)
        finally:
            unwound.append("poller")

    sim.spawn(poller, held)
    sim.spawn(poller, Held(), at=100.0)  # never started
    sim.run(until=60.0)
    alive = weakref.ref(held)
    del held
    gc.collect()
    assert alive() is not None  # a parked greenlet's frame is out of the collector's sight
    sim.close()
    gc.collect()
    assert alive() is None
    assert unwound == ["poller"]
