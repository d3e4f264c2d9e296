"""Shared fixtures of the verl tests: one local Ray for the tests that need one, shut down after."""

from __future__ import annotations

import pytest

RAY_STARTUP_TIMEOUT = "timed out during startup"
"""Ray's message when its raylet has not registered within a fixed 30 s (ray/_private/node.py; no
setting changes it): seen on a 2-core machine busy with other work, gone on a second start."""


def start_ray(init, shutdown, attempts: int = 3) -> None:
    """init(), started again after shutdown() when Ray's own startup wait ran out, up to `attempts`
    starts; any other error, or the last timeout, is raised as it came."""
    for attempt in range(1, attempts + 1):
        try:
            init()
            return
        except Exception as err:
            if RAY_STARTUP_TIMEOUT not in str(err) or attempt == attempts:
                raise
            shutdown()


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray of 2 CPUs and no GPU, started once for the session and always shut down.

    Ray's workers inherit this process's environment, so they import the same `bae` (an editable
    install, or PYTHONPATH) as the test process."""
    import ray

    if ray.is_initialized():  # pragma: no cover - only if something else left one running
        ray.shutdown()
    start_ray(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False), ray.shutdown)
    try:
        yield ray
    finally:
        ray.shutdown()
