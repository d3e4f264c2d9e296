"""Shared fixtures of the verl tests: one local Ray for the tests that need one, shut down after."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray of 2 CPUs and no GPU, started once for the session and always shut down.

    Ray's workers inherit this process's environment, so they import the same `bae` (an editable
    install, or PYTHONPATH) as the test process."""
    import ray

    if ray.is_initialized():  # pragma: no cover - only if something else left one running
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
