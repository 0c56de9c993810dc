"""The benchmark report: `report.md` (run description, targets, one section per table), a PNG plot
per table and `results.json` (every number, for tools and tests)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .timing import format_seconds

STATUSES = ("met", "missed", "not measured")


def table(key, title, columns, rows, notes=(), targets=(), data=None) -> dict:
    "One table of a run, as results.json stores it and the report renders it."
    return {"key": key, "title": title, "columns": list(columns), "rows": [list(r) for r in rows],
            "notes": list(notes), "targets": list(targets), "data": data or {}}


def target(name: str, status: str, measured: str, detail: str = "") -> dict:
    "One target of a table: what was aimed at, met or missed, and the measured number."
    return {"target": name, "status": status, "measured": measured, "detail": detail}


def markdown_table(columns: list, rows: list) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |",
             "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def all_targets(tables: list) -> list:
    "(table title, target) for every target, in table order."
    return [(table["title"], target) for table in tables for target in table["targets"]]


def targets_table(tables: list) -> str:
    rows = []
    for title, target in all_targets(tables):
        rows.append([title.split(".")[0], target["target"], target["measured"], f"**{target['status']}**"])
    return markdown_table(["table", "target", "measured", "status"], rows)


# --------------------------------------------------------------------------------------------
# Plots: one PNG per table that has something to draw. Small files (they are committed).

def _figure(width=9.0, height=3.4, ncols=1, nrows=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    return plt, fig, list(axes.ravel())


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_pruning_cost(table: dict, path: Path) -> Path:
    stats = table["data"]["stats"]
    names = list(stats)[::-1]
    medians = np.array([stats[n]["median"] for n in names])
    errors = np.array([[stats[n]["median"] - stats[n]["q1"] for n in names],
                       [stats[n]["q3"] - stats[n]["median"] for n in names]])
    plt, fig, (ax,) = _figure(height=0.45 * len(names) + 1.2)
    colors = ["tab:orange" if n.startswith("tinytorch") else "tab:blue" for n in names]
    ax.barh(names, medians * 1e3, xerr=errors * 1e3, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (median, quartiles; log scale)")
    ax.set_title(f"global magnitude pruning of {table['data']['total']:,} weights to {table['data']['sparsity']:.0%}")
    return _save(plt, fig, path)


def plot_accuracy(table: dict, path: Path) -> Path:
    data = table["data"]
    plt, fig, axes = _figure(width=4.6 * len(data["models"]), height=3.6, ncols=len(data["models"]))
    sparsities = data["sparsities"]
    positions = np.arange(len(sparsities))  # evenly spaced: the interesting range is 90-98%
    for ax, kind in zip(axes, data["models"]):
        dense = 100 * np.mean(data["dense"][kind])
        ax.axhspan(dense - 1, dense + 1, color="gray", alpha=0.15, label="dense ± 1 point")
        ax.axhline(dense, color="gray", linestyle="--", linewidth=1)
        for method, style in zip(("one-shot", "one-shot + fine-tuning", "iterative (cubic)"), ("s:", "o-", "^-")):
            values = np.array([data["accuracy"][f"{kind}|{method}|{s}"] for s in sparsities]) * 100
            ax.errorbar(positions, values.mean(axis=1), yerr=values.std(axis=1) if values.shape[1] > 1 else None,
                        fmt=style, label=method, capsize=2, markersize=4)
        ax.set_xticks(positions, [f"{s:.0%}" for s in sparsities])
        ax.set_xlabel("sparsity")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"digits {kind.upper()}")
        ax.set_ylim(max(0, ax.get_ylim()[0]), 100)
    axes[0].legend(fontsize=8, loc="lower left")
    return _save(plt, fig, path)


def plot_compression(table: dict, path: Path) -> Path:
    data = table["data"]
    kinds = list(data["points"])
    plt, fig, axes = _figure(width=4.6 * len(kinds), height=3.4, ncols=len(kinds))
    for ax, kind in zip(axes, kinds):
        ratio, change = np.array(data["points"][kind]).T
        ax.scatter(ratio, change, s=8, alpha=0.5, label="storage configurations")
        best = data["best_stats"][kind]["within"]
        ax.scatter([best["ratio"]], [-best["drop"]], s=60, marker="*", color="tab:red",
                   label=f"best at <= 1 point: {best['ratio']:.1f}x")
        ax.axvline(40, color="gray", linestyle="--", linewidth=1, label="40x target")
        ax.axhline(-1, color="gray", linestyle=":", linewidth=1, label="-1 point")
        ax.set_xscale("log")
        ax.set_xlim(0.8, max(60.0, 1.3 * ratio.max()))
        ax.set_ylim(max(change.min() - 1, -25), max(change.max(), 0) + 1)
        ax.set_xlabel("compression ratio (dense FP32 file / file)")
        ax.set_ylabel("accuracy change (points)")
        ax.set_title(f"digits {kind.upper()}")
        ax.legend(fontsize=7, loc="lower left")
    return _save(plt, fig, path)


def plot_speed(table: dict, path: Path) -> Path:
    data = table["data"]
    labels = list(data)
    plt, fig, axes = _figure(width=9, height=3.0 * len(labels), nrows=len(labels))
    for ax, label in zip(axes, labels):
        entry = data[label]
        order = [n for n in entry["order"] if n != "dense"]
        batches = sorted({int(k.split("|")[1]) for k in entry["measured"]})
        width = 0.8 / (len(batches) + 1)
        x = np.arange(len(order))
        ax.bar(x - 0.4 + width / 2, [entry["ideal"][n] for n in order], width, color="lightgray", label="ideal (FLOPs)")
        for i, batch in enumerate(batches, start=1):
            values = [entry["measured"][f"{n}|{batch}"]["speedup"]["median"] for n in order]
            ax.bar(x - 0.4 + width / 2 + i * width, values, width, label=f"measured, batch {batch}")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, order, rotation=20, fontsize=8)
        ax.set_ylabel("speedup over dense")
        ax.set_title(label)
        ax.legend(fontsize=7, ncol=len(batches) + 1)
    return _save(plt, fig, path)


def plot_methods(table: dict, path: Path) -> Path:
    data = table["data"]
    entries = data["entries"]
    plt, fig, (ax,) = _figure(width=9, height=4.2)
    teacher = entries[data["order"][0]]
    ax.axhspan(100 * teacher["accuracy"] - 1, 100 * teacher["accuracy"], color="gray", alpha=0.15,
               label="teacher - 1 point")
    markers = "os^Dvp*hX"
    for i, label in enumerate(data["order"]):
        e = entries[label]
        ax.scatter([e["bytes"]], [100 * e["accuracy"]], s=60, marker=markers[i % len(markers)], zorder=3,
                   label=f"{label}: {e['bytes']:,} B")
    ax.set_xscale("log")
    lo = min(e["bytes"] for e in entries.values())
    hi = max(e["bytes"] for e in entries.values())
    ax.set_xlim(lo / 1.6, hi * 1.6)
    accs = [100 * e["accuracy"] for e in entries.values()]
    ax.set_ylim(max(0.0, min(accs) - 2), min(100.0, max(accs) + 1))
    ax.set_xlabel("file size (bytes, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("digits: accuracy against file size")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(plt, fig, path)


PLOTS = {"pruning_cost": plot_pruning_cost, "accuracy_vs_sparsity": plot_accuracy,
         "compression": plot_compression, "inference_speed": plot_speed, "methods": plot_methods}


# --------------------------------------------------------------------------------------------

def _machine_line(machine: dict) -> str:
    torch = f"PyTorch {machine['torch']}" if machine.get("torch") else "PyTorch not installed"
    return (f"{machine['cores']} cores ({machine['cpu']}), {machine['os']}, Python {machine['python']}, "
            f"NumPy {machine['numpy']}, BLAS {machine['blas']} (OPENBLAS_NUM_THREADS={machine['blas_threads']}), "
            f"{torch}")


def _run_lines(result: dict, meta: dict) -> list:
    tables = result["tables"]
    code = meta["commit"]
    dirty = f" plus uncommitted changes in {len(code['changed'])} path(s)" if code["dirty"] else ""
    durations = ", ".join(f"table {t['title'].split('.')[0]} {format_seconds(t['seconds'])}" for t in tables)
    return [
        f"- **Run:** {meta['mode']} mode, {meta['date']}, {format_seconds(meta['seconds'])} in total "
        f"({durations}).",
        f"- **Machine:** {_machine_line(meta['machine'])}; shared with other jobs: 1-minute load average "
        f"{meta['load']['start']:.1f} at the start, {meta['load']['end']:.1f} at the end.",
        f"- **Code:** commit `{code['commit']}`{dirty}; `tinytorch/compression/prune.py` sha256 `{meta['prune_sha']}`.",
        f"- **Reproduce:** `pip install -e \".[bench]\"` (PyTorch is optional), then `{meta['command']}`.",
        "- **Method:** every timing is a median over rounds after a warm-up; contenders are interleaved "
        "round by round and compared by the median of their per-round ratios. The benchmark process runs "
        "with one BLAS thread (`tito bench` sets OPENBLAS_NUM_THREADS=1; no table is about BLAS threading) "
        "and PyTorch with one thread.",
    ]


def render(result: dict, meta: dict, images: dict) -> str:
    "The full report: every row, note and target detail."
    tables = result["tables"]
    lines = [f"# Benchmarks: {meta['module']}", "", *_run_lines(result, meta), "",
             "## Targets", "", targets_table(tables), ""]
    for table in tables:
        lines += [f"## {table['title']}", "", markdown_table(table["columns"], table["rows"]), ""]
        if table["key"] in images:
            lines += [f"![{table['title']}]({images[table['key']]})", ""]
        lines += [f"- {note}" for note in table["notes"]]
        for target in table["targets"]:
            if target["detail"]:
                lines.append(f"- *{target['target']}* ({target['status']}): {target['detail']}")
        lines.append("")
    return "\n".join(lines)


def _pick(table: dict, columns: list, keep_row=lambda row: True) -> str:
    "A markdown table of some columns (by name) and rows of `table`."
    index = [table["columns"].index(c) for c in columns]
    return markdown_table(columns, [[row[i] for i in index] for row in table["rows"] if keep_row(row)])


def render_summary(result: dict, meta: dict, images: dict, report_link: str) -> str:
    "The condensed report that the README shows: targets, then the key rows of each table and the plots."
    tables = {t["key"]: t for t in result["tables"]}
    lines = [*_run_lines(result, meta), f"- **Full report** (every row and note): [{report_link}]({report_link})", "",
             "**Targets**", "", targets_table(result["tables"]), ""]
    details = [(title, t) for title, t in all_targets(result["tables"]) if t.get("detail")]
    if details:
        lines.extend(["**What the numbers say**", ""])
        lines.extend(f"- **{t['target']}: {t['status']}.** {t['detail']}" for _, t in details)
        lines.append("")

    def section(key, body):
        table = tables[key]
        lines.extend([f"**{table['title']}**", "", body, ""])
        if key in images:
            lines.extend([f"![{table['title']}]({images[key]})", ""])

    section("pruning_cost", _pick(tables["pruning_cost"], ["method", "median", "time vs tinytorch"]))
    section("accuracy_vs_sparsity", markdown_table(tables["accuracy_vs_sparsity"]["columns"],
                                                   tables["accuracy_vs_sparsity"]["rows"]))
    section("compression", _pick(tables["compression"], tables["compression"]["columns"],
                                 lambda row: row[1] in ("dense, FP32", "dense, INT8") or row[1].startswith("**")
                                 or "(iterative), INT8, delta (8-bit)" in row[1]))
    if "recipe" in tables:   # results written before table 3b existed have no such table
        section("recipe", markdown_table(tables["recipe"]["columns"], tables["recipe"]["rows"]))
    speed = tables["inference_speed"]
    speed_columns = ["model", "variant", "ideal (FLOP) speedup"] + [c for c in speed["columns"] if c.endswith("speedup")
                                                                    and c.startswith("batch")]
    section("inference_speed", _pick(speed, speed_columns,
                                     lambda row: row[1] != "dense" and not row[1].startswith(("masked 95", "masked 99"))))
    section("student_loop", _pick(tables["student_loop"], ["command", "median", "runs", "outcome"]))
    if "methods" in tables:   # results written before table 6 existed have no such table
        section("methods", markdown_table(tables["methods"]["columns"], tables["methods"]["rows"]))
    if "structured" in tables:   # results written before table 7 existed have no such table
        section("structured", markdown_table(tables["structured"]["columns"], tables["structured"]["rows"]))
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def write(result: dict, meta: dict, out: Path, root: Path | None = None) -> dict:
    """Write report.md, summary.md (the README's condensed version), the PNGs and results.json into
    `out`; returns {name: path}. summary.md links its images relative to `root` (the repository)
    when `out` lies inside it, so it can be pasted into the README as it is."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prefix = ""
    if root is not None:
        try:
            prefix = out.resolve().relative_to(Path(root).resolve()).as_posix() + "/"
        except ValueError:
            prefix = ""
    written, images = {}, {}
    for table in result["tables"]:
        plot = PLOTS.get(table["key"])
        if plot is not None:
            path = plot(table, out / f"{table['key']}.png")
            images[table["key"]] = path.name
            written[path.name] = path
    report = out / "report.md"
    report.write_text(render(result, meta, images), encoding="utf-8")
    written["report.md"] = report
    summary = out / "summary.md"
    summary.write_text(render_summary(result, meta, {k: prefix + v for k, v in images.items()},
                                      prefix + "report.md") + "\n", encoding="utf-8")
    written["summary.md"] = summary
    data = out / "results.json"
    data.write_text(json.dumps(_jsonable({"meta": meta, **result}), indent=1), encoding="utf-8")
    written["results.json"] = data
    return written


README_BEGIN = "<!-- benchmarks: begin. Rendered from benchmarks/results/results.json by " \
               "`python -m benchmarks.report benchmarks/results --readme README.md`; do not edit by hand. -->"
README_END = "<!-- benchmarks: end -->"


def readme_block(readme_text: str) -> str:
    "The rendered part of the README (between the markers), or ValueError if the markers are missing."
    begin, end = readme_text.find(README_BEGIN), readme_text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError("README.md has no benchmarks block (the begin/end markers)")
    return readme_text[begin + len(README_BEGIN):end].strip("\n")


def update_readme(readme: Path, summary: str) -> None:
    "Put `summary` (summary.md's text) between the README's markers."
    text = readme.read_text(encoding="utf-8")
    old = readme_block(text)
    readme.write_text(text.replace(README_BEGIN + "\n" + old + "\n", README_BEGIN + "\n" + summary.strip("\n") + "\n", 1),
                      encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    "`python -m benchmarks.report DIR`: render DIR/results.json again (after changing the layout, not the run)."
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--readme", type=Path, help="also put summary.md into this README between its markers")
    args = parser.parse_args(argv)
    saved = json.loads((args.folder / "results.json").read_text(encoding="utf-8"))
    meta = saved.pop("meta")
    written = write(saved, meta, args.folder, root=Path(__file__).resolve().parent.parent)
    if args.readme:
        update_readme(args.readme, written["summary.md"].read_text(encoding="utf-8"))
        written["README"] = args.readme
    print("wrote " + ", ".join(sorted(map(str, written))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
