"""Fixtures for tests that need a real kernel with kprobes, and root.

On a machine without them every such test skips with the reason. The guest harness sets
KPCTL_REQUIRE_KERNEL=1, which turns each of those skips into a failure: in a guest a
missing feature is a broken harness or a broken kpctl, never a reason to pass.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from kpctl.tracefs import Tracefs

REQUIRED = os.environ.get("KPCTL_REQUIRE_KERNEL") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test unless condition holds; fail instead when required."""
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"required kernel feature missing: {reason}", pytrace=False)
    pytest.skip(reason)


def emptied_pipe(tracefs: Tracefs, instance: str) -> Path:
    """instance's trace_pipe, its buffer emptied (the instance made if need be)."""
    tracefs.make_instance(instance)
    tracefs.write_value(f"{instance}/trace", "")
    return tracefs.path(f"{instance}/trace_pipe")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel" in str(item.path):
            item.add_marker(pytest.mark.kernel)
    # Lockdown cannot be lifted: such a test runs after every other test of the session.
    items.sort(key=lambda item: item.get_closest_marker("locks_down_the_kernel") is not None)
