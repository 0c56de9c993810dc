"""pytest plugin of benchmarks/mutation.py: keep only one task's graded tests, or list them all.

Loaded in the child pytest with `-p benchmarks.mutation_select`; it reads two variables:
MUTATION_TASK=<id> deselects every test not marked `@pytest.mark.task("<id>")`, and
MUTATION_COLLECT=<file> writes each collected test's node id and task (or null) as JSON.
Standard library only: it runs inside the tests' process.
"""
import json
import os


def _task(item):
    marker = item.get_closest_marker("task")
    return str(marker.args[0]) if marker is not None and marker.args else None


def pytest_collection_modifyitems(config, items):
    listing = os.environ.get("MUTATION_COLLECT")
    if listing:
        with open(listing, "w", encoding="utf-8") as out:
            json.dump([{"nodeid": item.nodeid, "path": str(item.path), "task": _task(item)} for item in items], out)
    task = os.environ.get("MUTATION_TASK")
    if task:
        keep = [item for item in items if _task(item) == task]
        dropped = [item for item in items if _task(item) != task]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
