"""Worker processes for math_equal: one `Worker` per process, a `WorkerPool` lending them to batches.

Each worker is a long-lived `python -m bae.verify.worker` process spoken to in JSON lines over
pipes. The per-pair time limit is enforced here, by waiting on the pipe with poll and killing
the process when the limit passes: no signals, so it holds in any thread. A killed worker is
replaced by a fresh process when it is next given a pair.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading

WORKERS_ENV = "BAE_VERIFY_WORKERS"
START_TIMEOUT = 120.0  # seconds for a new worker to import sympy and math-verify


def default_workers() -> int:
    """The number of worker processes a batch uses when not told: the BAE_VERIFY_WORKERS
    environment variable if set (an integer >= 1, else ValueError), else the number of cores this
    process may run on (os.sched_getaffinity; os.cpu_count where that does not exist)."""
    value = os.environ.get(WORKERS_ENV)
    if value is not None:
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV}={value!r}: expected an integer >= 1")
        return workers
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Worker:
    """One worker process, started on its first pair (or by `start`). Not thread-safe: a pool
    lends each worker to one thread at a time."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._poll: select.poll | None = None

    @property
    def pid(self) -> int | None:
        """The process id, or None before the first pair and after a kill."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the process unless it is running (replacing a dead one); RuntimeError if it does
        not say it is ready within START_TIMEOUT seconds."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self.close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bae.verify.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # the caller's import path, so the worker imports the same bae (a checkout, a worktree)
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        # poll, not select: select fails on descriptors above 1024, which a big trainer may reach
        self._poll = select.poll()
        self._poll.register(self._proc.stdout, select.POLLIN)
        if self._line(START_TIMEOUT) != b"ready\n":
            self.close()
            raise RuntimeError("the math-verify worker did not start")

    def _line(self, timeout: float) -> bytes | None:
        """The next line from the process (b"" when it has died), or None when none comes within
        `timeout` seconds."""
        if not self._poll.poll(timeout * 1000):
            return None
        return self._proc.stdout.readline()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            with contextlib.suppress(BrokenPipeError):  # a request left unsent in the buffer
                self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc = self._poll = None

    def equal(self, prediction: str, gold: str, timeout: float) -> bool:
        """Whether the worker finds `prediction` equal to `gold` within `timeout` seconds.

        Past the limit the process is killed and the answer is False. A process that has died
        (killed from outside, or crashed) is replaced and the pair sent again, once: a pair that
        kills two processes in a row is False. So a pair takes at most `timeout` seconds of
        comparison, or twice that when its first process dies under it.
        """
        request = (json.dumps([prediction, gold]) + "\n").encode()
        for _ in range(2):
            self.start()
            try:
                self._proc.stdin.write(request)
                self._proc.stdin.flush()
            except BrokenPipeError:  # died while idle: nothing was compared yet
                self.close()
                continue
            line = self._line(timeout)
            if line is None:
                self.close()
                return False
            if line:
                return line.strip() == b"1"
            self.close()  # died under this pair
        return False


class WorkerPool:
    """Worker processes lent to batches; thread-safe.

    `map` serves one batch with `workers` processes at once: it takes idle workers (or new ones)
    for the batch, runs them from as many threads (the caller's thread among them), and takes
    them back afterwards, so concurrent batches from several threads each get their own workers.
    Idle workers are kept for the next batch; `stop` ends them all, `close` (run at exit) for good.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._lent: set[Worker] = set()
        self._retiring: set[Worker] = set()  # lent workers to end when given back
        self._closed = False
        atexit.register(self.close)

    def pids(self) -> list[int]:
        """Process ids of the started workers, idle or lent (one killed from outside is listed
        until it is next given a pair)."""
        with self._lock:
            return [w.pid for w in [*self._idle, *self._lent] if w.pid is not None]

    def _lend(self) -> Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the verifier pool is closed")
            worker = self._idle.pop() if self._idle else Worker()
            self._lent.add(worker)
            return worker

    def _take_back(self, worker: Worker) -> None:
        with self._lock:
            self._lent.discard(worker)
            retire = self._closed or worker in self._retiring
            self._retiring.discard(worker)
            if not retire:
                self._idle.append(worker)
        if retire:
            worker.close()

    def start(self, workers: int) -> None:
        """Have at least `workers` processes running and idle, started in parallel (a worker
        otherwise starts on its first pair, about a second of the first batch)."""
        lent = [self._lend() for _ in range(workers)]
        errors: list[BaseException] = []

        def start(worker: Worker) -> None:
            try:
                worker.start()
            except BaseException as e:
                errors.append(e)

        try:
            starts = [threading.Thread(target=start, args=(worker,), daemon=True) for worker in lent]
            for thread in starts:
                thread.start()
            for thread in starts:
                thread.join()
        finally:
            for worker in lent:
                self._take_back(worker)
        if errors:
            raise errors[0]

    def map(self, pairs: list[tuple[str, str]], *, timeout: float, workers: int) -> list[bool]:
        """Worker.equal of every (prediction, gold) pair, in order, over min(workers, len(pairs))
        processes, each pair under its own limit of `timeout` seconds; a pair past it is False and
        the others go on in the other processes (and in its own, once replaced). No cache, no fast
        path, no deduplication: those are math_equal_many's."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:  # poll would wait forever on a negative limit
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        results = [False] * len(pairs)
        next_pair = iter(range(len(pairs)))
        take_lock = threading.Lock()
        errors: list[BaseException] = []

        def serve() -> None:
            worker = self._lend()
            try:
                while True:
                    with take_lock:
                        i = next(next_pair, None)
                    if i is None:
                        return
                    results[i] = worker.equal(*pairs[i], timeout)
            except BaseException as e:  # a worker that cannot start: report it in the caller's thread
                errors.append(e)
                with take_lock:  # the other threads stop taking pairs
                    for _ in next_pair:
                        pass
            finally:
                self._take_back(worker)

        helpers = [threading.Thread(target=serve, daemon=True) for _ in range(min(workers, len(pairs)) - 1)]
        for thread in helpers:
            thread.start()
        serve()
        for thread in helpers:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def stop(self) -> None:
        """End the idle workers now and the lent ones when their batch gives them back; later
        batches start new ones. In a forked child (whose atexit runs the parent's handlers) it
        signals none of the parent's processes: Popen finds they are not the child's."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._retiring |= self._lent
        for worker in idle:
            worker.close()

    def close(self) -> None:
        """Stop every worker (as `stop`) for good: later batches raise RuntimeError. Run at exit."""
        with self._lock:
            self._closed = True
        self.stop()


_shared: WorkerPool | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """This process's pool, created on first use. A forked child gets a new one: the parent's
    workers and pipes are the parent's."""
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid():
            _shared, _shared_pid = WorkerPool(), os.getpid()
        return _shared
