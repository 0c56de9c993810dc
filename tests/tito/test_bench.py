"""`tito bench`: the timing rules of benchmarks/timing.py, and a tiny end-to-end run whose report
must have every table, plot and target of the full one."""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from tito_testlib import REPO, run_tito

sys.path.insert(0, str(REPO))  # benchmarks/ is a top-level folder of the repository, not installed

from benchmarks.report import STATUSES  # noqa: E402
from benchmarks.timing import format_seconds, interleaved, paired_ratio, summary, timed  # noqa: E402

SECTIONS = ["## Targets", "## 1. Pruning cost", "## 2. Accuracy vs sparsity", "## 3. Compression",
            "## 4. Inference speed", "## 5. Student loop", "## 6. Compression methods compared",
            "## 7. Structured pruning of real architectures: accuracy, MACs and speed"]
PLOTS = ["pruning_cost.png", "accuracy_vs_sparsity.png", "compression.png", "inference_speed.png", "methods.png"]


def test_interleaved_warms_up_rotates_and_keeps_one_sample_per_round():
    calls = []

    def measure(name, seconds):
        def run():
            calls.append(name)
            return seconds
        return run

    samples = interleaved({"a": measure("a", 1.0), "b": measure("b", 2.0), "c": measure("c", 3.0)},
                          rounds=3, warmup=1)
    # one warm-up round, then rounds starting with a, b, c in turn
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: v.tolist() for k, v in samples.items()} == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    with pytest.raises(ValueError, match="rounds"):
        interleaved({"a": measure("a", 1.0)}, rounds=0)


def test_timed_runs_setup_untimed_and_divides_by_number():
    clock = {"now": 0.0}
    log = []

    def setup():
        log.append("setup")
        clock["now"] += 100.0   # setup time must not be counted

    def fn():
        log.append("fn")
        clock["now"] += 0.5

    measure = timed(fn, setup, number=4, timer=lambda: clock["now"])
    assert measure() == pytest.approx(0.5)
    assert log == ["setup", "fn", "fn", "fn", "fn"]


def test_summary_and_paired_ratio_hand_computed():
    st = summary(np.array([4.0, 1.0, 3.0, 2.0, 100.0]))
    assert (st["median"], st["q1"], st["q3"], st["min"], st["rounds"]) == (3.0, 2.0, 4.0, 1.0, 5)
    # a slow round slows both contenders: the paired ratio ignores it
    ratio = paired_ratio(np.array([2.0, 4.0, 200.0]), np.array([1.0, 2.0, 100.0]))
    assert ratio["median"] == 2.0 and ratio["q1"] == 2.0 and ratio["q3"] == 2.0
    with pytest.raises(ValueError, match="same length"):
        paired_ratio(np.ones(2), np.ones(3))


def test_format_seconds():
    assert [format_seconds(s) for s in (4.2e-6, 4.2e-5, 3.14e-3, 0.25, 1.234, 42.0, 125.0)] == \
        ["4.2 µs", "42 µs", "3.1 ms", "250 ms", "1.23 s", "42.0 s", "2 min 05 s"]


def _tables(section: str) -> list[list[list[str]]]:
    "Every markdown table in `section`, as rows of cells (header first, separator dropped)."
    tables, current = [], []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-", ":"} and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    proc = run_tito(REPO, "bench", "18_compression", "--tiny", "--out", str(out), timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out, proc.stdout


def test_tiny_run_writes_every_table_plot_and_target(tiny_report):
    out, stdout = tiny_report
    text = (out / "report.md").read_text(encoding="utf-8")
    positions = [text.find(heading + "\n") for heading in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    for field in ("**Run:** tiny mode", "**Machine:**", "cores", "NumPy", "BLAS", "OPENBLAS_NUM_THREADS=1",
                  "**Code:** commit", "**Reproduce:**", "tito bench 18_compression"):
        assert field in text, field
    sections = re.split(r"\n(?=## )", text)
    for section in sections[1:]:
        tables = _tables(section)
        assert len(tables) == 1, section[:80]
        header, *rows = tables[0]
        assert rows and all(len(row) == len(header) for row in rows), section[:80]
    for plot in PLOTS:
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000, plot
        assert f"]({plot})" in text

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [t["key"] for t in results["tables"]] == ["pruning_cost", "accuracy_vs_sparsity", "compression", "recipe",
                                                     "inference_speed", "student_loop", "methods",
                                                     "structured"]
    assert results["meta"]["machine"]["cores"] >= 1 and results["meta"]["machine"]["numpy"] == np.__version__
    targets = [t for table in results["tables"] for t in table["targets"]]
    names = " ".join(t["target"] for t in targets)
    for wanted in ("np.partition", "PyTorch", "90% sparsity", "iterative ahead", ">= 40x", "structured 50%"):
        assert wanted in names, wanted
    assert all(t["status"] in STATUSES and t["measured"] for t in targets)
    targets_rows = _tables(sections[1])[0][1:]
    assert len(targets_rows) == len(targets)
    assert all(row[3].strip("*") in STATUSES for row in targets_rows)
    # the summary printed at the end lists the same targets
    assert sum(line.strip().split("  ")[0] in STATUSES for line in stdout.splitlines()) == len(targets)


def test_tiny_run_tables_hold_consistent_numbers(tiny_report):
    out, _ = tiny_report
    tables = {t["key"]: t for t in json.loads((out / "results.json").read_text(encoding="utf-8"))["tables"]}
    cost = tables["pruning_cost"]
    same_job = {row[0]: row for row in cost["rows"]}
    # every contender that prunes prunes round(0.9 * n) weights, the same ones as tinytorch
    n = cost["data"]["total"]
    for name in ("tinytorch magnitude_prune (global)", "bare np.partition: threshold + mask",
                 "full sort: threshold + mask"):
        assert same_job[name][4] == f"{round(0.9 * n):,}" and same_job[name][5] == "100.0000%", name
    assert "skipped" in same_job["PyTorch global_unstructured (L1Unstructured)"][1]   # --tiny leaves torch out
    speed = tables["inference_speed"]["data"]
    for entry in speed.values():
        assert entry["ideal"]["dense"] == 1.0 and entry["ideal"]["masked 90%"] == 1.0
        assert entry["ideal"]["SparseLinear 90%"] == pytest.approx(10.0, rel=0.01)
    loop = tables["student_loop"]["rows"]
    assert [row[0] for row in loop] == ["tito export 18_compression", "tito test 18_compression"]
    assert all("skipped" in row[1] for row in loop)


def test_tiny_run_methods_table_measures_files_flops_and_latency(tiny_report):
    out, _ = tiny_report
    tables = {t["key"]: t for t in json.loads((out / "results.json").read_text(encoding="utf-8"))["tables"]}
    methods = tables["methods"]
    data, rows = methods["data"], methods["rows"]
    teacher, p32, p8, lowrank, labels, distilled, combined = (data["entries"][label] for label in data["order"])
    assert [row[0] for row in rows] == data["order"] and len(rows) == 7
    assert data["order"][-1] == "distilled -> pruned 70% -> INT8" and "(T=2, alpha=0.5)" in data["order"][5]
    # FLOPs by hand: 2 per multiply-add of 64-256-128-10 and of the 64-32-10 student
    assert teacher["flops"] == teacher["nonzero_flops"] == 2 * (64 * 256 + 256 * 128 + 128 * 10) == 100_864
    assert labels["flops"] == distilled["flops"] == combined["flops"] == 2 * (64 * 32 + 32 * 10)
    # pruning removes 95% of the weights (ties at zero aside) but no dense FLOP; the combination 70%
    assert p32["flops"] == p8["flops"] == teacher["flops"]
    assert p32["nonzero_flops"] == pytest.approx(0.05 * teacher["flops"], rel=0.01)
    assert p8["nonzero_flops"] <= p32["nonzero_flops"]
    assert combined["nonzero_flops"] == pytest.approx(0.3 * combined["flops"], rel=0.02)
    # low rank: each factorized layer r * (in + out) < in * out, so fewer FLOPs than the teacher
    ranks = data["ranks"]
    sizes = {"0": (64, 256), "2": (256, 128), "4": (128, 10)}
    macs = [ranks[n] * (n_in + n_out) if n in ranks else n_in * n_out for n, (n_in, n_out) in sizes.items()]
    assert ranks and lowrank["flops"] == 2 * sum(macs) < teacher["flops"]
    # bytes: the dense FP32 file holds 4 bytes per parameter plus a header; INT8 values shrink the pruned file
    assert teacher["bytes"] > 4 * 50_826 and labels["bytes"] == distilled["bytes"] > 4 * (64 * 32 + 32 + 32 * 10 + 10)
    assert p8["bytes"] < p32["bytes"] < teacher["bytes"] and combined["bytes"] < distilled["bytes"]
    assert combined["bytes"] == min(e["bytes"] for e in data["entries"].values())
    # the FP32 pruned file is lossless: both pruned files hold the same model, and FP32 matches table 2
    accuracy = tables["accuracy_vs_sparsity"]["data"]["accuracy"]["mlp|iterative (cubic)|0.95"][0]
    assert p32["accuracy"] == pytest.approx(accuracy)
    assert teacher["accuracy"] == pytest.approx(tables["accuracy_vs_sparsity"]["data"]["dense"]["mlp"][0])
    for e in data["entries"].values():
        for batch in data["batches"]:
            timing = e[f"batch {batch}"]
            assert 0 < timing["q1"] <= timing["median"] <= timing["q3"] and timing["speedup"]["median"] > 0
    assert data["batches"] == [1, 360] and teacher["batch 1"]["speedup"]["median"] == 1.0
    assert rows[0][1] == f"{teacher['bytes']:,}" and rows[-1][2] == f"{teacher['bytes'] / combined['bytes']:.1f}x"


def test_summary_and_rerendering_from_results_json(tiny_report, tmp_path):
    import shutil

    from benchmarks import report

    out, _ = tiny_report
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.count("| --- |") >= 7 and "**Targets**" in summary and "(report.md)" in summary
    assert "**6. Compression methods compared**" in summary and "distilled -> pruned 70% -> INT8" in summary
    for plot in PLOTS:
        assert f"]({plot})" in summary   # the folder is outside the repository: plain file names
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    (copy / "report.md").unlink()
    assert report.main([str(copy)]) == 0
    assert (copy / "report.md").read_text(encoding="utf-8") == (out / "report.md").read_text(encoding="utf-8")


def test_pruning_table_says_not_installed_without_torch(monkeypatch):
    from benchmarks import compression

    monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` now raises ImportError
    table = compression.pruning_cost(compression.TINY.with_(torch=True), log=lambda message: None)
    assert table["rows"][-1][0].startswith("PyTorch") and table["rows"][-1][1].startswith("not installed")
    torch_target = [t for t in table["targets"] if "PyTorch" in t["target"]]
    assert [t["status"] for t in torch_target] == ["not measured"]


def test_bench_refuses_modules_without_a_suite_and_bad_output(tmp_path):
    proc = run_tito(REPO, "bench", "01_tensor")
    assert proc.returncode == 2 and "no benchmark suite for 01_tensor" in proc.stderr
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    proc = run_tito(REPO, "bench", "18_compression", "--tiny", "--out", str(afile))
    assert proc.returncode == 2 and "must be a folder" in proc.stderr


def test_the_readme_shows_the_committed_full_run_as_rendered():
    "The README's benchmark numbers are benchmarks/results/results.json rendered, not typed by hand."
    import json

    from benchmarks import report

    root = REPO
    saved = json.loads((root / "benchmarks" / "results" / "results.json").read_text(encoding="utf-8"))
    meta = saved.pop("meta")
    images = {t["key"]: f"benchmarks/results/{t['key']}.png" for t in saved["tables"] if t["key"] in report.PLOTS}
    rendered = report.render_summary(saved, meta, images, "benchmarks/results/report.md")
    block = report.readme_block((root / "README.md").read_text(encoding="utf-8"))
    assert block == rendered.strip("\n"), "run: python -m benchmarks.report benchmarks/results --readme README.md"


def test_tiny_run_recipe_steps_add_up(tiny_report):
    "Table 3b: each step's file is no larger than the last, and 'saved' is exactly the difference."
    out, _ = tiny_report
    table = {t["key"]: t for t in json.loads((out / "results.json").read_text(encoding="utf-8"))["tables"]}["recipe"]
    rows = [row for row in table["rows"] if row[:2] == ["MLP", "package"]]
    number = lambda cell: int(cell.replace(",", ""))  # noqa: E731
    steps = [number(row[3]) for row in rows[:6]]    # dense, pruning, header, quantization, QAT, Huffman
    # QAT keeps the bytes, but a weight it rounds to exactly 0 is no longer stored
    assert steps[0] > steps[1] > steps[2] > steps[3] >= steps[4] >= steps[5], steps
    assert [number(row[4]) for row in rows[1:6]] == [a - b for a, b in zip(steps, steps[1:])]
    assert "**the recipe**" in rows[5][2] and any(row[2].startswith("N:M 2:4") for row in rows)
    assert {t["target"].split(":")[0] for t in table["targets"]} >= {"MLP, package split", "MLP, independent split"}
