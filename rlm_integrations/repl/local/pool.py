"""A warm pool of pre-started workers, so a new REPL does not wait for Python to boot.

Workers in the pool are generic: limits that depend on the REPL (memory, policy, output
bound) are applied when a REPL takes one. Each worker serves one REPL and is never
returned to the pool, so nothing leaks from one REPL to the next.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading

from rlm_integrations.repl.local.process import WorkerProcess

__all__ = ["WorkerPool", "default_pool", "prewarm"]


class WorkerPool:
    """Keeps `size` default-interpreter workers started and ready to hand out.

    Args:
        size: how many idle workers to keep (0 disables the pool).
    """

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._owner_pid = os.getpid()
        self._refilling = False

    def take(self) -> WorkerProcess | None:
        """Hand out an idle worker (a ready one first), or None if the pool is empty; refills in the background."""
        worker: WorkerProcess | None = None
        with self._lock:
            if os.getpid() != self._owner_pid:  # forked: those workers belong to the parent
                self._idle.clear()
                self._owner_pid = os.getpid()
            live = [w for w in self._idle if w.alive]
            for dead in (w for w in self._idle if not w.alive):
                dead.kill()
            self._idle = collections.deque(live)
            for candidate in self._idle:
                if candidate.ready.is_set():
                    worker = candidate
                    break
            if worker is None and self._idle:
                worker = self._idle[0]
            if worker is not None:
                self._idle.remove(worker)
        self._refill_in_background()
        return worker

    def _refill_in_background(self) -> None:
        with self._lock:
            if self._refilling or len(self._idle) >= self.size:
                return
            self._refilling = True
        threading.Thread(target=self._refill, name="rlm-pool-refill", daemon=True).start()

    def _refill(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._idle) >= self.size:
                        return
                worker = WorkerProcess()
                with self._lock:
                    self._idle.append(worker)
        finally:
            with self._lock:
                self._refilling = False

    def prewarm(self, count: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Grow the pool to at least `count` workers; with `wait`, block until they are ready."""
        with self._lock:
            self.size = max(self.size, count)
        self._refill()
        if wait:
            with self._lock:
                workers = list(self._idle)
            for worker in workers:
                worker.ready.wait(timeout)

    def shutdown(self) -> None:
        """Kill every idle worker (called at interpreter exit)."""
        with self._lock:
            workers, self._idle = list(self._idle), collections.deque()
            self.size = 0
        for worker in workers:
            worker.kill()


def _size_from_environment() -> int:
    try:
        return max(0, int(os.environ.get("RLM_REPL_POOL_SIZE", "1")))
    except ValueError:
        return 1


default_pool = WorkerPool(_size_from_environment())
atexit.register(default_pool.shutdown)


def prewarm(count: int = 1, *, wait: bool = True) -> None:
    """Pre-start `count` REPL workers so the next `LocalREPL`s start in milliseconds.

    Useful before a batch evaluation that opens many REPLs at once.
    """
    default_pool.prewarm(count, wait=wait)
