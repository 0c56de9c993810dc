"""`tito compress`, the README's main job, on a short configuration."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tito(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "tito.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_compress_writes_a_loadable_file_and_reports_its_real_size(tmp_path):
    out = tmp_path / "mlp.ttcz"
    proc = tito("compress", "--sparsity", "0.5", "--steps", "1", "--epochs-per-step", "1", "--qat-epochs", "1",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    row = next(l for l in proc.stdout.splitlines() if l.startswith("pruned + QAT 3-bit values"))
    reported = int(re.search(r"([\d,]+)\s+[\d.]+x", row).group(1).replace(",", ""))
    assert reported == out.stat().st_size
    dense = next(l for l in proc.stdout.splitlines() if l.startswith("dense FP32"))
    assert float(re.search(r"([\d.]+)%", dense).group(1)) >= 96.0

    from tinytorch.compression.storage import load_compressed
    assert load_compressed(out).decompress() is not None


def test_compress_is_deterministic():
    args = ("compress", "--sparsity", "0.5", "--steps", "1", "--epochs-per-step", "1", "--qat-epochs", "1")
    first, second = tito(*args), tito(*args)
    strip = lambda text: [l for l in text.splitlines() if "done in" not in l]
    assert strip(first.stdout) == strip(second.stdout)


@pytest.mark.parametrize("args, message", [
    (["--sparsity", "1.5"], "--sparsity must be in [0, 1), got 1.5"),
    (["--bits", "12"], "--bits must be from 2 to 8, got 12"),
    (["--model", "resnet"], "invalid choice"),
    (["--qat-epochs", "0"], "--qat-epochs must be at least 1, got 0"),
])
def test_compress_bad_arguments_are_one_line(args, message):
    proc = tito("compress", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_report_columns_fit_the_longest_label():
    from tito.compress import _table

    lines = _table(("model", "file bytes", "ratio"), [("pruned + QAT 3-bit values, huffman, file reloaded", "3,115", "65.3x"),
                                                       ("dense FP32", "203,350", "1.0x")])
    assert len({len(line) for line in lines}) == 1            # no cell runs past its column
    assert lines[2].startswith("pruned + QAT 3-bit values, huffman, file reloaded  ")
    assert [line.rstrip()[-5:] for line in lines[2:]] == ["65.3x", " 1.0x"]
