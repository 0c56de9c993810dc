"""Property tests draw the same examples on every run (a regrade gives the same score), and
explore new ones only when a developer sets TINYTORCH_HYPOTHESIS=explore."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).resolve().parents[1]

DRAWS = '''
import os
from hypothesis import given, strategies as st

@given(st.integers(-10**9, 10**9), st.floats(-1e6, 1e6))
def test_draws(n, x):
    with open(os.environ["DRAWS_FILE"], "a") as out:
        out.write(f"{n} {x!r}\\n")
'''


def _draws(folder: Path, run: int, mode: str | None) -> list[str]:
    out = folder / f"draws-{run}.txt"
    env = {**os.environ, "DRAWS_FILE": str(out)}
    env.pop("TINYTORCH_HYPOTHESIS", None)
    if mode:
        env["TINYTORCH_HYPOTHESIS"] = mode
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return out.read_text().splitlines()


def _course_copy(tmp_path: Path) -> Path:
    "A folder with the course's tests/conftest.py and one property test that logs its examples."
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_draws.py").write_text(DRAWS)
    return tmp_path


def test_the_loaded_profile_is_derandomized_without_a_database():
    assert settings.default.derandomize is True
    assert settings.default.database is None


def test_two_runs_draw_the_same_examples(tmp_path):
    folder = _course_copy(tmp_path)
    first, second = _draws(folder, 1, None), _draws(folder, 2, None)
    assert len(first) >= 20 and first == second


def test_explore_mode_draws_new_examples(tmp_path):
    folder = _course_copy(tmp_path)
    assert _draws(folder, 1, "explore") != _draws(folder, 2, "explore")
