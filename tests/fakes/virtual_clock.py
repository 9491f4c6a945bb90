"""A discrete-event simulation on a virtual clock: a heap of (time, event) and a clock that jumps.

Code under test runs unchanged inside *processes*: each process is a greenlet, and whatever it
calls that takes time in the world being modelled (an API call's latency, botocore's backoff,
a long poll) calls `Simulation.sleep`, which parks the process and lets the clock jump to the
next event. Exactly one process runs at a time and ties are broken by the order events were
scheduled, so the same seed gives the same run on any machine, idle or busy: nothing here
reads the wall clock or sleeps for real.

    sim = Simulation()
    sim.spawn(worker, at=5.0)       # worker() runs at t=5 s and may call sim.sleep(...)
    sim.call_at(60.0, report)       # a plain callback, on the scheduler: it must not sleep
    sim.run(until=3600.0)
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from greenlet import greenlet


class ProcessKilled(BaseException):
    """Thrown into a parked process that is stopped from outside (a Lambda timeout, say).

    A BaseException, so the code under test cannot swallow it with `except Exception`.
    """


class SimulationError(RuntimeError):
    """A process raised: the simulation stops and the process's exception is the cause."""


@dataclass(eq=False)
class Process:
    """A greenlet the scheduler resumes at the times it asked for."""

    name: str
    glet: greenlet
    wake: int = -1  # the sequence number of the heap entry that resumes it; -1: not parked
    finished: bool = False
    killed: bool = False
    result: Any = None
    data: dict[str, Any] = field(default_factory=dict)  # whatever the model keeps per process


class Simulation:
    def __init__(self) -> None:
        self.now = 0.0
        self._live: set[Process] = set()  # spawned and not finished
        _OPEN.add(self)
        # (when, sequence number, callback or None, process or None): a wake-up names its
        # process rather than a closure, since most events are wake-ups.
        self._heap: list[tuple[float, int, Callable[[], None] | None, Process | None]] = []
        self._seq = itertools.count()
        self._scheduler: greenlet | None = None
        self._current: Process | None = None
        self._stopping = False
        self._until: float | None = None
        self._most_events: int | None = None
        self.events = 0  # events handled, for the report

    # --- scheduling ----------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[], None]) -> int:
        """Run `callback` on the scheduler at `when` (not before now); returns its number."""
        seq = next(self._seq)
        heapq.heappush(self._heap, (max(when, self.now), seq, callback, None))
        return seq

    def call_later(self, delay: float, callback: Callable[[], None]) -> int:
        return self.call_at(self.now + delay, callback)

    def spawn(
        self, function: Callable[..., Any], *args: Any, at: float | None = None, name: str = ""
    ) -> Process:
        """Start `function(*args)` as a process at `at` (default: now)."""

        def body() -> None:
            process.result = function(*args)

        process = Process(name or getattr(function, "__name__", "process"), greenlet(body))
        self._live.add(process)
        self._wake_at(process, self.now if at is None else at)
        return process

    @property
    def current(self) -> Process:
        if self._current is None:
            raise RuntimeError("not inside a simulated process: only processes can sleep")
        return self._current

    def sleep(self, seconds: float) -> None:
        """Park the calling process for `seconds` of simulated time.

        When nothing else is due until after it wakes, the clock just moves on: parking would
        make its wake-up the next event handled, and nothing run in between. Most sleeps are an
        API call's few milliseconds, and the switches to the scheduler and back were a tenth
        of a big run's time. The run's order and figures are the same either way.
        """
        process = self.current
        wake = self.now + max(0.0, seconds)
        if (
            not process.killed
            and not self._stopping
            and (not self._heap or self._heap[0][0] > wake)
            and (self._until is None or wake <= self._until)
            and (self._most_events is None or self.events < self._most_events)
        ):
            self.now = wake
            self.events += 1
            return
        self._wake_at(process, wake)
        self._park(process)

    def suspend(self) -> None:
        """Park the calling process until another one calls `wake(process)`."""
        process = self.current
        process.wake = -1
        self._park(process)

    def wake(self, process: Process) -> None:
        """Resume a process now (after the events already due now), if it is parked."""
        if not process.finished:
            self._wake_at(process, self.now)

    def kill(self, process: Process, error: BaseException | None = None) -> None:
        """Throw `error` (default ProcessKilled) into a process, now, from the scheduler.

        Its pending wake-up, if any, is void; a process that has finished by then is left alone.
        Whatever it does while unwinding (a `finally` that calls an API) stops at its first
        sleep: a killed process has no more effects, as a Lambda stopped at its timeout has none.
        """
        process.wake = -1
        process.killed = True

        def throw() -> None:
            if not process.finished:
                self._enter(process, lambda: process.glet.throw(error or ProcessKilled()))

        self.call_at(self.now, throw)

    # --- running -------------------------------------------------------------------------------

    def run(self, until: float | None = None, max_events: int | None = None) -> None:
        """Handle events in time order until none are left, `until`, or `max_events`."""
        self._scheduler = greenlet.getcurrent()
        self._stopping = False
        self._until = until
        self._most_events = None if max_events is None else self.events + max_events
        while self._heap and not self._stopping:
            when = self._heap[0][0]
            if until is not None and when > until:
                self.now = until
                return
            if self._most_events is not None and self.events >= self._most_events:
                raise SimulationError(f"more than {max_events} events: a loop that never ends?")
            _, seq, callback, process = heapq.heappop(self._heap)
            self.now = when
            self.events += 1
            if process is not None:
                self._resume(process, seq)
            elif callback is not None:
                callback()

    def _wake_at(self, process: Process, when: float) -> None:
        seq = next(self._seq)
        heapq.heappush(self._heap, (max(when, self.now), seq, None, process))
        process.wake = seq

    def stop(self) -> None:
        """End `run` after the event being handled."""
        self._stopping = True

    def _park(self, process: Process) -> None:
        if process.killed:
            raise ProcessKilled
        assert self._scheduler is not None
        self._scheduler.switch()

    def _resume(self, process: Process, seq: int) -> None:
        # Only the process's latest wake-up counts: an earlier one was superseded (or killed).
        if process.finished or process.wake != seq:
            return
        process.wake = -1
        self._enter(process, process.glet.switch)

    def _enter(self, process: Process, step: Callable[[], Any]) -> None:
        # Whoever spawned it, a process returns to the scheduler when it parks or ends.
        assert self._scheduler is not None
        process.glet.parent = self._scheduler
        self._current = process
        try:
            step()
        except ProcessKilled:
            pass
        except BaseException as error:
            raise SimulationError(f"process {process.name!r} failed at t={self.now:.3f}") from error
        finally:
            self._current = None
            if process.glet.dead:
                process.finished = True
                self._live.discard(process)

    def close(self) -> None:
        """End every process still parked or not yet started; the simulation runs no more.

        A parked process's frame holds the simulation, and the simulation its process, in a
        cycle the garbage collector cannot see into (greenlets' frames are not traversed): a
        run left open keeps every model and record it made alive until the interpreter exits,
        where a big run's took seconds to free, and each full collection meanwhile walks them.
        """
        self._heap.clear()
        self._scheduler = greenlet.getcurrent()
        for process in list(self._live):
            process.wake = -1
            process.killed = True
            # Whatever it raises unwinding, the run it belonged to is over.
            with contextlib.suppress(SimulationError, ProcessKilled):
                self._enter(process, functools.partial(process.glet.throw, ProcessKilled()))
            process.finished = True
        self._live.clear()
        _OPEN.discard(self)

    @staticmethod
    def close_all() -> None:
        """Close every simulation not closed yet (tests/conftest.py, after each test)."""
        for simulation in list(_OPEN):
            simulation.close()


_OPEN: weakref.WeakSet[Simulation] = weakref.WeakSet()  # every simulation not closed yet
