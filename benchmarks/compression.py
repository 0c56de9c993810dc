"""The benchmark suite of module 18 (`tito bench 18_compression`): one function per report table.

1. `pruning_cost`          global magnitude pruning of ~10M weights vs NumPy thresholds and PyTorch
2. `accuracy_vs_sparsity`  one-shot, one-shot + fine-tuning, iterative: digits MLP and CNN
3. `compression_sizes`     bytes on disk and accuracy of every storage format
4. `inference_speed`       dense, masked, structured, CSR at batch 1 and 64, measured vs ideal
5. `student_loop`          how long `tito export 18_compression` and `tito test 18_compression` take
6. `methods_compared`      pruning, low rank, distillation and all together: bytes, FLOPs, latency, accuracy
8a, 8b. `deep_compression.py`  Deep Compression's LeNet-300-100 and LeNet-5 tables on MNIST, beside the paper's

Each returns a table dict (`key`, `title`, `columns`, `rows`, `notes`, `targets`, `data`, `seconds`)
that `report.py` renders. Only the public API of `tinytorch.compression` (prune, lowrank, distill) is used.
"""
from __future__ import annotations

import copy
import functools
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinytorch.compression.pipeline import DIGITS_RECIPES, compress as _compress, save_dense
from tinytorch.compression.prune import iterative_prune, magnitude_prune, measure_sparsity, structured_prune
from tinytorch.compression.sparse import SparseLinear, to_sparse
from tinytorch.compression.storage import load_compressed
from tinytorch.compression.inference import benchmark_inference
from tinytorch.compression.prune import polynomial_schedule
from tinytorch.compression.distill import distill
from tinytorch.compression.lowrank import choose_ranks, count_flops, factorize_model
from tinytorch.core.activations import ReLU
from tinytorch.core.layers import Linear, Sequential
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model
from tinytorch.core.optimizers import CosineLR
from tinytorch.core.optimizers import Adam
from tinytorch.core.spatial import Conv2d
from tinytorch.core.tensor import Tensor, manual_seed
from tinytorch.core.training import evaluate, fit
from tinytorch.data.loader import digits_loaders

from .deep_compression import KEYS as DC_KEYS, SETUPS as DC_SETUPS, TITLES as DC_TITLES, dc_table
from . import structured
from .recipe import recipe_table
from .report import table as _table, target as _target
from .timing import format_seconds, interleaved, paired_ratio, summary, timed

# These tables name every storage setting they measure; unnamed ones keep the values they were measured with
# (fixed-width codes, FP32 biases, 8-bit deltas), not compress's smallest-file defaults.
compress = functools.partial(_compress, coding="fixed", bias_bits=32, index_bits=8)

# The targets, in one place.
PARTITION_MAX_RATIO = 1.5        # tinytorch within 1.5x of a bare np.partition pruning
TORCH_MIN_SPEEDUP = 50.0         # and at least 50x faster than torch's global_unstructured
MAX_DROP_POINTS = 1.0            # "within 1 point" of the dense model's accuracy
COMPRESSION_MIN_RATIO = 40.0     # >= 40x smaller at <= 1 point loss
STRUCTURED_MIN_EFFICIENCY = 0.9  # structured 50%: measured speedup within 10% of its ideal

FINETUNE_LR = 3e-3               # Adam learning rate of every fine-tuning run (the notebook's FINETUNE_LR)
METHODS = ("one-shot", "one-shot + fine-tuning", "iterative (cubic)")
# Table 6 follows the recipes of the notebook's Sections 11-13 (compression_dev.py).
KD_T, KD_ALPHA = 2.0, 0.5        # distillation temperature and weight of the soft term (KD_T, KD_ALPHA)
STUDENT_LR = 1e-2                # Adam learning rate of the students, cosine-decayed
METHODS_SPARSITY = 0.95          # the pruned teacher: table 2's iterative model at this sparsity


@dataclass(frozen=True)
class Config:
    name: str
    # 1. pruning cost: Linear weight shapes (out, in), pruned together (global ranking)
    prune_shapes: tuple = ((2048, 2048), (2048, 2048), (1024, 2048))
    prune_sparsity: float = 0.9
    prune_rounds: int = 9
    # 2. accuracy vs sparsity
    models: tuple = ("mlp", "cnn")
    sparsities: tuple = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98)
    seeds: tuple = (0, 1, 2, 3, 4)
    dense_epochs: int | None = None          # None: the course's recipe (train_digits_model's default)
    finetune_epochs: int = 30                # fine-tuning budget of both fine-tuned methods (the notebook's)
    iterative_steps: int = 10                # pruning steps; finetune_epochs / steps epochs after each
    # 3. compression: search space of the pruned + quantized files
    shown_sparsity: float = 0.9              # the sparsity whose every index encoding is listed
    search_min_sparsity: float = 0.8
    search_bits: tuple = (8, 6, 4)
    search_per_channel: tuple = (False, True)
    search_bias_bits: tuple = (32, 16, 8)
    # 3b. the compression recipe: {kind: (sparsity, value bits, delta bits)}, searched settings, N:M
    recipe_models: tuple = ("mlp", "cnn")
    recipe_splits: tuple = ("package", "independent")
    recipe: dict = field(default_factory=lambda: {kind: (r["sparsity"], r["bits"], r["index_bits"])
                                                  for kind, r in DIGITS_RECIPES.items()})
    recipe_grid: dict = field(default_factory=lambda: {
        "mlp": ((0.95, 4), (0.95, 2), (0.96, 4), (0.96, 3), (0.97, 4), (0.97, 3), (0.98, 4), (0.98, 3)),
        "cnn": ((0.85, 4), (0.9, 3), (0.92, 4), (0.92, 3), (0.95, 4))})
    recipe_nm_models: tuple = ("mlp",)
    recipe_nm: tuple = ((2, 4), (1, 4))
    qat_epochs: int = 10
    # 4. inference speed
    wide_sizes: tuple = (1024, 2048, 2048, 10)   # a wide MLP: compute, not Python, dominates
    batches: tuple = (1, 64)
    structured_ratios: tuple = (0.25, 0.5, 0.75)
    sparse_levels: tuple = (0.9, 0.95, 0.99)
    speed_rounds: int = 15
    speed_min_time: float = 0.02              # seconds per timed block (calls are repeated to fill it)
    # 5. student loop
    export_repeats: int = 5
    test_repeats: int = 3
    # 6. compression methods compared (the notebook's LOWRANK_*, KD_* and KD_PRUNE_* recipes)
    lowrank_energy: float = 0.7
    lowrank_epochs: int = 10                 # fine-tuning after factorizing (Adam FINETUNE_LR, cosine)
    student_hidden: int = 32                 # student 64 -> hidden -> 10
    student_epochs: int = 20
    combo_sparsity: float = 0.7              # the distilled student pruned to this, then INT8
    combo_steps: int = 5                     # pruning steps (cubic schedule) ...
    combo_epochs_per_step: int = 2           # ... each followed by this many distillation epochs
    methods_batches: tuple = (1, 360)        # 1 digit and the whole test set
    # PyTorch: used when installed, unless switched off
    torch: bool = True

    def with_(self, **changes) -> "Config":
        return Config(**{**asdict(self), **changes})


FULL = Config("full")
QUICK = FULL.with_(
    name="quick", prune_shapes=((2048, 1024), (1024, 1024)), prune_rounds=5,
    sparsities=(0.0, 0.8, 0.9, 0.95, 0.98), seeds=(0,), finetune_epochs=10, iterative_steps=5,
    search_bits=(8, 4), search_bias_bits=(32, 16), wide_sizes=(512, 1024, 1024, 10),
    speed_rounds=5, speed_min_time=0.005, export_repeats=1, test_repeats=0,
    recipe_splits=("package",), qat_epochs=5,
    recipe_grid={"mlp": ((0.96, 3), (0.97, 4)), "cnn": ((0.85, 4),)})
# For tito's own tests: every table and plot, in a few seconds.
TINY = FULL.with_(
    name="tiny", prune_shapes=((256, 256), (128, 256)), prune_rounds=2,
    sparsities=(0.0, 0.9, 0.95), seeds=(0,), dense_epochs=1, finetune_epochs=1, iterative_steps=1,
    search_bits=(8,), search_per_channel=(False,), search_bias_bits=(32,),
    wide_sizes=(64, 128, 128, 10), speed_rounds=2, speed_min_time=0.0005,
    export_repeats=0, test_repeats=0, torch=False,
    lowrank_epochs=1, student_epochs=1, combo_steps=1, combo_epochs_per_step=1,
    recipe_models=("mlp",), recipe_splits=("package", "independent"), qat_epochs=1,
    recipe={"mlp": (0.9, 4, 6)}, recipe_grid={"mlp": ((0.9, 3),)}, recipe_nm=((2, 4),))
CONFIGS = {"full": FULL, "quick": QUICK, "tiny": TINY}


def _torch_or_none(cfg: Config):
    "The torch module when it is installed and wanted, else the reason it is not used."
    if not cfg.torch:
        return None, "skipped (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "not installed (pip install -e \".[bench]\")"
    torch.set_num_threads(1)  # one thread, like NumPy's BLAS here: a same-resources comparison
    return torch, None


# --------------------------------------------------------------------------------------------
# 1. Pruning cost
# --------------------------------------------------------------------------------------------

def _bare_prune(arrays: list, threshold_of) -> list:
    "The minimal hand-written global magnitude pruning: one threshold over all layers, mask, zero."
    scores = np.concatenate([np.abs(a).ravel() for a in arrays])
    threshold = threshold_of(scores)
    masks = []
    for a in arrays:
        keep = np.abs(a) > threshold
        a[~keep] = 0.0
        masks.append(keep)
    return masks


def _profile_top(fn, setup, limit: int = 5) -> list:
    "Where `fn` spends its time: the `limit` functions with the most own time, as (name, seconds)."
    setup()
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats
    rows = []
    for (filename, line, name), (_, _, own, _, _) in stats.items():
        where = Path(filename).name if filename != "~" else "numpy"
        label = name if name.startswith("<") else f"{name} ({where})" if where != "numpy" else name
        rows.append((label, own))
    rows.sort(key=lambda r: -r[1])
    return rows[:limit]


def pruning_cost(cfg: Config, log=print) -> dict:
    s = cfg.prune_sparsity
    rng = np.random.default_rng(0)
    layers = [Linear(n_in, n_out, rng=rng) for n_out, n_in in cfg.prune_shapes]
    model = Sequential(*layers)
    originals = [layer.weight.data.copy() for layer in layers]
    total = sum(w.size for w in originals)
    k = round(s * total)
    log(f"  {total:,} float32 weights in {len(layers)} layers, sparsity {s:.0%}")

    def restore_tinytorch():
        for layer, original in zip(layers, originals):
            np.copyto(layer.weight.data, original)
            layer.weight.mask = None

    arrays = [w.copy() for w in originals]

    def restore_arrays():
        for a, original in zip(arrays, originals):
            np.copyto(a, original)

    contenders = {
        "tinytorch magnitude_prune (global)": (lambda: magnitude_prune(model, s), restore_tinytorch),
        "bare np.partition: threshold + mask": (
            lambda: _bare_prune(arrays, lambda x: np.partition(x, k - 1)[k - 1]), restore_arrays),
        "bare np.partition: threshold only": (
            lambda: np.partition(np.concatenate([np.abs(a).ravel() for a in arrays]), k - 1)[k - 1],
            restore_arrays),
        "full sort: threshold + mask": (lambda: _bare_prune(arrays, lambda x: np.sort(x)[k - 1]), restore_arrays),
        "np.percentile: threshold + mask": (
            lambda: _bare_prune(arrays, lambda x: np.percentile(x, 100 * s)), restore_arrays),
    }
    torch, torch_missing = _torch_or_none(cfg)
    torch_model = None
    if torch is not None:
        import torch.nn.utils.prune as torch_prune

        torch_model = torch.nn.Sequential(*[torch.nn.Linear(n_in, n_out) for n_out, n_in in cfg.prune_shapes])
        parameters = [(m, "weight") for m in torch_model]

        def restore_torch():
            for m, original in zip(torch_model, originals):
                if torch_prune.is_pruned(m):
                    torch_prune.remove(m, "weight")
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(original))

        contenders["PyTorch global_unstructured (L1Unstructured)"] = (
            lambda: torch_prune.global_unstructured(parameters, pruning_method=torch_prune.L1Unstructured,
                                                    amount=s), restore_torch)

    # Same job, same answer: check every contender prunes the weights tinytorch prunes.
    restore_tinytorch()
    magnitude_prune(model, s)
    reference = np.concatenate([layer.weight.mask.ravel() for layer in layers])
    agreement, memory = {}, {}
    for name, (fn, setup) in contenders.items():
        setup()
        # NumPy reports its allocations to tracemalloc (PyTorch does not): peak temporary memory.
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        memory[name] = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        if "threshold only" in name:
            continue
        if name.startswith("tinytorch"):
            keep = reference
        elif name.startswith("PyTorch"):
            keep = np.concatenate([m.weight_mask.detach().numpy().astype(bool).ravel() for m in torch_model])
        else:
            keep = np.concatenate([(a != 0).ravel() for a in arrays])
        agreement[name] = (int(total - np.count_nonzero(keep)), float(np.mean(keep == reference)))

    samples = interleaved({name: timed(fn, setup) for name, (fn, setup) in contenders.items()},
                          rounds=cfg.prune_rounds, warmup=1)
    base = samples["tinytorch magnitude_prune (global)"]
    rows, stats = [], {}
    for name in contenders:
        st = summary(samples[name])
        ratio = paired_ratio(samples[name], base)  # > 1: the contender is slower than tinytorch
        stats[name] = {**st, "vs_tinytorch": ratio}
        pruned, same = agreement.get(name, (None, None))
        stats[name]["peak_bytes"] = None if name.startswith("PyTorch") else memory[name]
        rows.append([name, format_seconds(st["median"]), f"{format_seconds(st['q1'])} – {format_seconds(st['q3'])}",
                     f"{ratio['median']:.2f}x",
                     "-" if pruned is None else f"{pruned:,}", "-" if same is None else f"{same:.4%}",
                     "not traced" if name.startswith("PyTorch") else f"{memory[name] / 2**20:,.0f} MiB"])
    if torch is None:
        rows.append(["PyTorch global_unstructured (L1Unstructured)", torch_missing, "", "", "", "", ""])
    restore_tinytorch()
    top = _profile_top(lambda: magnitude_prune(model, s), restore_tinytorch)
    restore_tinytorch()

    partition = stats["bare np.partition: threshold + mask"]["vs_tinytorch"]["median"]
    threshold_only = stats["bare np.partition: threshold only"]["vs_tinytorch"]["median"]
    slowdown = 1 / partition
    targets = [_target(
        f"pruning cost within {PARTITION_MAX_RATIO}x of a bare np.partition threshold",
        "met" if slowdown <= PARTITION_MAX_RATIO else "missed",
        f"{slowdown:.2f}x the bare np.partition pruning ({1 / threshold_only:.2f}x the threshold alone)",
        f"tinytorch holds up to {memory['tinytorch magnitude_prune (global)'] / 2**20:,.0f} MiB of temporaries "
        f"(the bare version {memory['bare np.partition: threshold + mask'] / 2**20:,.0f} MiB); its own time by "
        "function in a profiled run: " + ", ".join(f"{n} {format_seconds(t)}" for n, t in top))]
    torch_name = "PyTorch global_unstructured (L1Unstructured)"
    if torch_name in stats:
        speedup = stats[torch_name]["vs_tinytorch"]["median"]
        floor = paired_ratio(samples[torch_name], samples["bare np.partition: threshold only"])["median"]
        targets.append(_target(f"at least {TORCH_MIN_SPEEDUP:.0f}x faster than PyTorch's global pruning",
                               "met" if speedup >= TORCH_MIN_SPEEDUP else "missed", f"{speedup:.1f}x faster",
                               f"PyTorch {torch.__version__}, 1 thread. For scale: the bare np.partition "
                               f"threshold alone, which does no masking, is {floor:.1f}x faster than PyTorch."))
    else:
        targets.append(_target(f"at least {TORCH_MIN_SPEEDUP:.0f}x faster than PyTorch's global pruning",
                               "not measured", f"PyTorch {torch_missing}"))
    notes = [
        f"{total:,} float32 weights in Linear layers of shapes {', '.join(f'{o}x{i}' for o, i in cfg.prune_shapes)} "
        f"(PyTorch's default init, seed 0), pruned to {s:.0%} with one global ranking: {k:,} weights.",
        f"Median over {cfg.prune_rounds} interleaved rounds after one warm-up round; restoring the weights "
        "between runs is not timed. *Time vs tinytorch* is the median of the per-round time ratios (above 1: "
        "slower than tinytorch). *Same mask* compares each contender's kept weights with tinytorch's.",
        "Every contender does the whole job (global threshold, boolean masks, zeroed weights) except "
        "'threshold only', the floor: the selection itself.",
        f"Peak temporary memory: the most memory NumPy held at once during one run beyond what it held before "
        f"(tracemalloc), against {sum(w.nbytes for w in originals) / 2**20:,.0f} MiB of weights. Fresh large "
        "arrays cost page faults, so on a busy machine the time of memory-hungry code varies most.",
    ]
    if torch is not None:
        notes.append(f"PyTorch {torch.__version__} with torch.set_num_threads(1), like NumPy's single BLAS thread.")
    return _table("pruning_cost", "1. Pruning cost",
                  ["method", "median", "quartiles", "time vs tinytorch", "weights pruned", "same mask",
                   "peak temporary memory"], rows,
                  notes, targets, {"stats": stats, "total": total, "sparsity": s, "profile": top})


# --------------------------------------------------------------------------------------------
# 2. Accuracy vs sparsity
# --------------------------------------------------------------------------------------------

def _loaders(kind: str, seed: int):
    # Fresh loaders for every training run: each method sees the same batch order.
    return digits_loaders(image=kind == "cnn", seed=seed)


def _finetune(model, kind: str, seed: int, epochs: int):
    train, _ = _loaders(kind, seed)
    if epochs:
        fit(model, train, CrossEntropyLoss(), Adam(model.parameters(), lr=FINETUNE_LR), epochs=epochs,
            progress=False)
    return model


def _points(change: float) -> str:
    "An accuracy change in points, without the '-0.00' of a tiny negative number."
    return f"{0.0 if abs(change) < 0.005 else change:+.2f}"


def _mean_sd(values) -> str:
    values = 100 * np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def accuracy_vs_sparsity(cfg: Config, log=print) -> tuple[dict, dict]:
    """Returns the table and the trained models (dense and pruned) that tables 3 and 4 reuse."""
    if cfg.finetune_epochs % cfg.iterative_steps:
        raise ValueError(f"finetune_epochs ({cfg.finetune_epochs}) must be a multiple of iterative_steps "
                         f"({cfg.iterative_steps}) for equal fine-tuning budgets")
    per_step = cfg.finetune_epochs // cfg.iterative_steps
    acc = {}       # (kind, method, sparsity) -> [accuracy per seed]
    dense_acc = {}  # kind -> [accuracy per seed]
    models = {}    # (kind, seed, method, sparsity) -> model; (kind, seed, "dense", 0.0) -> dense
    for kind in cfg.models:
        build = digits_mlp if kind == "mlp" else digits_cnn
        for seed in cfg.seeds:
            start = time.perf_counter()
            manual_seed(seed)
            dense = build(seed=seed)
            train_digits_model(dense, epochs=cfg.dense_epochs, seed=seed)
            _, test = _loaders(kind, seed)
            dense_acc.setdefault(kind, []).append(evaluate(dense, test))
            models[kind, seed, "dense", 0.0] = dense
            for s in cfg.sparsities:
                oneshot = copy.deepcopy(dense)
                if s > 0:
                    magnitude_prune(oneshot, s)
                finetuned = _finetune(copy.deepcopy(oneshot), kind, seed, cfg.finetune_epochs)
                iterative = copy.deepcopy(dense)
                train, _ = _loaders(kind, seed)
                iterative_prune(iterative, train, s, steps=cfg.iterative_steps, epochs_per_step=per_step,
                                lr=FINETUNE_LR, progress=False)
                for method, m in zip(METHODS, (oneshot, finetuned, iterative)):
                    acc.setdefault((kind, method, s), []).append(evaluate(m, test))
                    if method != "one-shot" and s >= cfg.search_min_sparsity:
                        models[kind, seed, method, s] = m
                    if s > 0 and abs(measure_sparsity(m) - s) > 0.005:
                        raise AssertionError(f"{kind} {method}: sparsity {measure_sparsity(m):.4f}, wanted {s}")
            log(f"  {kind.upper()} seed {seed}: dense {dense_acc[kind][-1]:.1%}, "
                f"{len(cfg.sparsities)} sparsities x 3 methods in {time.perf_counter() - start:.1f} s")

    rows = []
    for kind in cfg.models:
        for s in cfg.sparsities:
            label = f"{s:.0%}" + (" (dense)" if s == 0 else "")
            rows.append([kind.upper(), label, *[_mean_sd(acc[kind, m, s]) for m in METHODS]])

    def mean(values):
        return float(np.mean(values))

    targets = []
    for kind in cfg.models:
        base = mean(dense_acc[kind])
        if 0.9 in cfg.sparsities:
            best_method = max(METHODS[1:], key=lambda m: mean(acc[kind, m, 0.9]))
            drop = 100 * (base - mean(acc[kind, best_method, 0.9]))
            others = ", ".join(f"{m} {_points(100 * (mean(acc[kind, m, 0.9]) - base))}" for m in METHODS)
            targets.append(_target(f"{kind.upper()}: 90% sparsity within {MAX_DROP_POINTS:g} point of dense",
                                   "met" if drop <= MAX_DROP_POINTS else "missed",
                                   f"{_points(-drop)} points ({best_method})",
                                   f"dense {100 * base:.2f}%; at 90%: {others} points"))
        high = [s for s in cfg.sparsities if s >= 0.95]
        if high:
            gaps = {s: 100 * (mean(acc[kind, METHODS[2], s]) - mean(acc[kind, METHODS[1], s])) for s in high}
            gaps_oneshot = {s: 100 * (mean(acc[kind, METHODS[2], s]) - mean(acc[kind, METHODS[0], s])) for s in high}
            ahead = all(g > 0 for g in gaps.values())
            targets.append(_target(
                f"{kind.upper()}: iterative ahead of one-shot at 95% and above",
                "met" if ahead else "missed",
                "; ".join(f"{s:.0%}: {_points(g)} points" for s, g in gaps.items()) + " vs one-shot + fine-tuning",
                "vs one-shot without fine-tuning: " + "; ".join(f"{s:.0%}: {_points(g)}" for s, g in gaps_oneshot.items())
                + " points"))
    notes = [
        f"Test accuracy (%) on the 360 held-out digits, mean ± sd over {len(cfg.seeds)} seed(s) "
        f"({', '.join(map(str, cfg.seeds))}: initialisation and batch order).",
        f"Dense: the course's recipe (`train_digits_model`, "
        f"{'its default epochs' if cfg.dense_epochs is None else f'{cfg.dense_epochs} epochs'}). "
        "One-shot: `magnitude_prune` (global) of the dense model, no training. "
        f"One-shot + fine-tuning: then {cfg.finetune_epochs} epochs of Adam (lr {FINETUNE_LR:g}) with the masks held. "
        f"Iterative: `iterative_prune` from the dense model, {cfg.iterative_steps} steps of the cubic schedule, "
        f"{per_step} epoch(s) after each: the same {cfg.finetune_epochs}-epoch budget.",
    ]
    data = {"sparsities": list(cfg.sparsities), "models": list(cfg.models),
            "dense": {k: v for k, v in dense_acc.items()},
            "accuracy": {f"{k}|{m}|{s}": v for (k, m, s), v in acc.items()}}
    return _table("accuracy_vs_sparsity", "2. Accuracy vs sparsity",
                  ["model", "sparsity", *METHODS], rows, notes, targets, data), models


# --------------------------------------------------------------------------------------------
# 3. Compression
# --------------------------------------------------------------------------------------------

def _file_size_and_accuracy(compressed, folder: Path, test, evaluate_it: bool = True) -> tuple[int, float | None]:
    "Save, measure the file, load it back and evaluate what was loaded (the bytes are real)."
    path = folder / "model.ttcz"
    compressed.save(path)
    size = path.stat().st_size
    accuracy = evaluate(load_compressed(path).decompress(), test) if evaluate_it else None
    return size, accuracy


INDEXES = (("csr", 8), ("bitmask", 8), ("delta", 4), ("delta", 6), ("delta", 8))


def _index_label(index: str, index_bits: int) -> str:
    return f"delta ({index_bits}-bit)" if index == "delta" else index


def compression_sizes(cfg: Config, models: dict, log=print) -> dict:
    results = {}   # config key -> {"bytes": [...], "drop": [...]}, per seed
    dense_bytes = {}
    breakdowns = {}
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        folder = Path(tmp)
        for kind in cfg.models:
            for seed in cfg.seeds:
                _, test = _loaders(kind, seed)
                dense = models[kind, seed, "dense", 0.0]
                base = evaluate(dense, test)
                size = save_dense(dense, folder / "dense.ttcz")
                dense_bytes.setdefault(kind, []).append(size)

                def record(key, compressed, accuracy_from=None):
                    nbytes, accuracy = _file_size_and_accuracy(compressed, folder, test, accuracy_from is None)
                    accuracy = accuracy if accuracy_from is None else accuracy_from
                    entry = results.setdefault(key, {"bytes": [], "drop": [], "acc": []})
                    entry["bytes"].append(nbytes)
                    entry["acc"].append(accuracy)
                    entry["drop"].append(100 * (base - accuracy))
                    if seed == cfg.seeds[0]:
                        breakdowns[key] = compressed.breakdown()
                    return accuracy

                record((kind, "dense", 0.0, 32, False, 32, "dense", 8), compress(dense, None, bits=32, index="dense"))
                for per_channel in (False, True):
                    record((kind, "dense", 0.0, 8, per_channel, 32, "dense", 8),
                           compress(dense, None, bits=8, index="dense", per_channel=per_channel))
                pruned_models = [(method, s) for (k, sd, method, s) in models
                                 if k == kind and sd == seed and method != "dense"]
                for method, s in pruned_models:
                    model = models[kind, seed, method, s]
                    # Values in FP32: lossless, every index encoding (same accuracy, different bytes).
                    accuracy = None
                    for index, index_bits in INDEXES:
                        accuracy = record((kind, method, s, 32, False, 32, index, index_bits),
                                          compress(model, None, bits=32, index=index, index_bits=index_bits),
                                          accuracy)
                    for bits in cfg.search_bits:
                        for per_channel in cfg.search_per_channel:
                            for bias_bits in cfg.search_bias_bits:
                                accuracy = None   # the index encoding never changes the values
                                for index, index_bits in INDEXES:
                                    accuracy = record((kind, method, s, bits, per_channel, bias_bits, index, index_bits),
                                                      compress(model, None, bits=bits, index=index,
                                                               index_bits=index_bits, per_channel=per_channel,
                                                               bias_bits=bias_bits), accuracy)
            log(f"  {kind.upper()}: {sum(1 for key in results if key[0] == kind)} storage configurations")

    def describe(key) -> str:
        kind, method, s, bits, per_channel, bias_bits, index, index_bits = key
        values = "FP32" if bits == 32 else f"INT{bits}" + (" per channel" if per_channel else "")
        if method == "dense":
            return f"dense, {values}"
        extra = "" if bias_bits == 32 else f", biases {'FP16' if bias_bits == 16 else f'INT{bias_bits}'}"
        short = "iterative" if method.startswith("iterative") else "one-shot + FT"
        return f"pruned {s:.0%} ({short}), {values}, {_index_label(index, index_bits)}{extra}"

    def stats(key) -> dict:
        entry = results[key]
        ratio = float(np.mean(dense_bytes[key[0]]) / np.mean(entry["bytes"]))
        return {"bytes": float(np.mean(entry["bytes"])), "ratio": ratio, "drop": float(np.mean(entry["drop"])),
                "acc": float(np.mean(entry["acc"]))}

    rows, best, points = [], {}, {}
    for kind in cfg.models:
        shown = [(kind, "dense", 0.0, 32, False, 32, "dense", 8), (kind, "dense", 0.0, 8, False, 32, "dense", 8),
                 (kind, "dense", 0.0, 8, True, 32, "dense", 8)]
        method = METHODS[2]
        if (kind, cfg.seeds[0], method, cfg.shown_sparsity) in models:
            for bits in (32, 8):
                for index, index_bits in INDEXES:
                    shown.append((kind, method, cfg.shown_sparsity, bits, False, 32, index, index_bits))
        for s in sorted({key[2] for key in results if key[0] == kind and key[1] == method}):
            if s > cfg.shown_sparsity:
                shown.append((kind, method, s, 8, False, 32, "delta", 8))
        candidates = [key for key in results if key[0] == kind]
        within = [key for key in candidates if stats(key)["drop"] <= MAX_DROP_POINTS]
        best_within = max(within, key=lambda key: stats(key)["ratio"])
        best_any = max(candidates, key=lambda key: stats(key)["ratio"])
        best[kind] = {"within": best_within, "any": best_any}
        points[kind] = [(stats(key)["ratio"], -stats(key)["drop"]) for key in candidates]
        for key in shown:
            st = stats(key)
            rows.append([kind.upper(), describe(key), f"{st['bytes']:,.0f}", f"{st['ratio']:.1f}x",
                         f"{100 * st['acc']:.1f}", _points(-st["drop"])])
        for label, key in (("best at <= 1 point loss", best_within), ("smallest file tried", best_any)):
            st = stats(key)
            rows.append([kind.upper(), f"**{label}:** {describe(key)}", f"{st['bytes']:,.0f}", f"**{st['ratio']:.1f}x**",
                         f"{100 * st['acc']:.1f}", _points(-st["drop"])])

    targets, limits = [], []
    for kind in cfg.models:
        key = best[kind]["within"]
        st = stats(key)
        parts = breakdowns[key]
        total = sum(parts.values())
        share = ", ".join(f"{name} {value:,} B ({value / total:.0%})" for name, value in parts.items())
        # What stops the next step: the same storage at the next sparsity loses too much accuracy.
        sparser = [k for k in results if k[0] == kind and k[1:2] == key[1:2] and k[3:] == key[3:] and k[2] > key[2]]
        after = ""
        if sparser:
            nxt = min(sparser, key=lambda k: k[2])
            after = (f"; the same storage at {nxt[2]:.0%} sparsity is {stats(nxt)['ratio']:.1f}x but loses "
                     f"{stats(nxt)['drop']:.2f} points")
        limits.append(f"{kind.upper()} best file ({describe(key)}): {share}{after}.")
        targets.append(_target(f"{kind.upper()}: >= {COMPRESSION_MIN_RATIO:.0f}x smaller at <= {MAX_DROP_POINTS:g} point loss",
                               "met" if st["ratio"] >= COMPRESSION_MIN_RATIO else "missed",
                               f"best {st['ratio']:.1f}x at {_points(-st['drop'])} points", limits[-1]))
    notes = [
        "Bytes of the file `CompressedModel.save` writes (weights, biases, architecture header), saved and loaded "
        "back; accuracy is measured on the loaded model. Ratio: dense FP32 file (`save_dense`) / this file. "
        f"Mean over {len(cfg.seeds)} seed(s); loss in points of test accuracy against each seed's dense model.",
        f"Pruned models come from table 2 (fine-tuned at {', '.join(f'{s:.0%}' for s in cfg.sparsities if s >= cfg.search_min_sparsity)}); "
        "the best rows search both fine-tuned methods, value bits "
        f"{', '.join(map(str, cfg.search_bits))}, per-tensor/per-channel scales, bias bits "
        f"{', '.join(map(str, cfg.search_bias_bits))} and every index encoding: {len(results)} files.",
    ]
    data = {"points": points, "best": {k: {n: list(v) for n, v in b.items()} for k, b in best.items()},
            "best_stats": {k: {n: stats(v) for n, v in b.items()} for k, b in best.items()},
            "dense_bytes": {k: float(np.mean(v)) for k, v in dense_bytes.items()},
            "breakdown": {kind: breakdowns[best[kind]["within"]] for kind in cfg.models}}
    return _table("compression", "3. Compression", ["model", "storage", "bytes", "ratio", "accuracy", "Δ points"],
                  rows, notes, targets, data)


# --------------------------------------------------------------------------------------------
# 4. Inference speed
# --------------------------------------------------------------------------------------------

def _macs(model, input_shape) -> int:
    "Multiply-adds per sample (what a matmul kernel executes): module 20's FLOP count, halved."
    return count_flops(model, input_shape) // 2


def _wide_mlp(sizes: tuple, seed: int = 0) -> Sequential:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out, rng=rng))
        if i < len(sizes) - 2:
            layers.append(ReLU())
    return Sequential(*layers)


def inference_speed(cfg: Config, models: dict, log=print) -> dict:
    seed = cfg.seeds[0]
    subjects = []
    if ("mlp", seed, "dense", 0.0) in models:
        x_test = np.concatenate([x.data for x, _ in _loaders("mlp", seed)[1]])
        subjects.append(("digits MLP", models["mlp", seed, "dense", 0.0], x_test))
    wide = _wide_mlp(cfg.wide_sizes)
    x_wide = np.random.default_rng(1).standard_normal((max(cfg.batches), cfg.wide_sizes[0])).astype(np.float32)
    subjects.append((f"wide MLP {'-'.join(map(str, cfg.wide_sizes))}", wide, x_wide))

    rows, results, targets = [], {}, []
    for label, dense, inputs in subjects:
        variants = {"dense": dense}
        for s in cfg.sparse_levels:
            masked = copy.deepcopy(dense)
            magnitude_prune(masked, s)
            variants[f"masked {s:.0%}"] = masked
            variants[f"SparseLinear {s:.0%}"] = to_sparse(masked)
        for r in cfg.structured_ratios:
            variants[f"structured {r:.0%}"] = structured_prune(dense, r)
        order = ["dense", *[f"masked {s:.0%}" for s in cfg.sparse_levels],
                 *[f"structured {r:.0%}" for r in cfg.structured_ratios],
                 *[f"SparseLinear {s:.0%}" for s in cfg.sparse_levels]]
        dense_macs = _macs(dense, inputs.shape[1:])
        ideal = {}
        for name in order:
            # A masked model still multiplies every zero: its kernel does the dense work.
            ideal[name] = 1.0 if name.startswith("masked") else dense_macs / _macs(variants[name], inputs.shape[1:])
        measured = {}
        for batch in cfg.batches:
            x = Tensor(inputs[:batch])
            measures = {}
            for name in order:
                model = variants[name]
                calls = benchmark_inference(model, x, warmup=2, repeats=1, min_time=cfg.speed_min_time)["number"]
                measures[name] = (lambda m=model, n=calls: benchmark_inference(m, x, warmup=0, repeats=1,
                                                                               number=n)["median"])
            samples = interleaved(measures, rounds=cfg.speed_rounds, warmup=1)
            for name in order:
                measured[name, batch] = {**summary(samples[name]),
                                         "speedup": paired_ratio(samples["dense"], samples[name])}
            log(f"  {label}, batch {batch}: dense {format_seconds(measured['dense', batch]['median'])}")
        for name in order:
            macs = _macs(variants[name], inputs.shape[1:])
            row = [label, name, f"{macs:,}", f"{ideal[name]:.2f}x"]
            for batch in cfg.batches:
                m = measured[name, batch]
                row += [format_seconds(m["median"]), f"{m['speedup']['median']:.2f}x"]
            rows.append(row)
        results[label] = {"ideal": ideal, "order": order,
                          "measured": {f"{n}|{b}": v for (n, b), v in measured.items()}}
        if "structured 50%" in order:
            for batch in cfg.batches:
                speedup = measured["structured 50%", batch]["speedup"]["median"]
                efficiency = speedup / ideal["structured 50%"]
                targets.append(_target(
                    f"structured 50% within 10% of its ideal speedup: {label}, batch {batch}",
                    "met" if efficiency >= STRUCTURED_MIN_EFFICIENCY else "missed",
                    f"{speedup:.2f}x of an ideal {ideal['structured 50%']:.2f}x ({efficiency:.0%})"))
    columns = ["model", "variant", "MACs / sample", "ideal (FLOP) speedup"]
    for batch in cfg.batches:
        columns += [f"batch {batch}: time", f"batch {batch}: speedup"]
    notes = [
        "Time per forward pass (`benchmark_inference`: no_grad, eval mode), median over "
        f"{cfg.speed_rounds} interleaved rounds after warm-up; each timed block repeats the call to fill "
        f"{format_seconds(cfg.speed_min_time)}. Speedup: median of the per-round ratios dense time / variant time.",
        "Ideal: dense multiply-adds / the variant's multiply-adds (a masked model still multiplies its zeros, so its "
        "ideal is 1x; SparseLinear executes one multiply-add per stored weight). Structured: `structured_prune` "
        "removes that fraction of every hidden layer's units, so the middle layer shrinks in both dimensions and "
        "the ideal exceeds 1 / (1 - ratio).",
        f"digits MLP: the trained seed-{seed} model of table 2 on real test digits. Wide MLP: same shape of network, "
        "untrained (speed does not depend on the values), global magnitude pruning like the digits model.",
        "Read speedups, not ratios of the time columns: each time is that variant's own median, and on a shared "
        "machine the rounds it comes from may have run under a different load than the dense model's; the speedup "
        "pairs the two within each round. Masked rows show the noise level: their true speedup is 1x.",
        "Batch 1 is a matrix-vector product, limited by reading the weights from memory rather than by arithmetic: "
        "a structured model whose smaller matrices stay in cache can beat its FLOP ratio there.",
    ]
    return _table("inference_speed", "4. Inference speed", columns, rows, notes, targets, results)


# --------------------------------------------------------------------------------------------
# 5. Student loop
# --------------------------------------------------------------------------------------------

def student_loop(cfg: Config, root: Path, log=print) -> dict:
    commands = [("tito export 18_compression", ["export", "18_compression"], cfg.export_repeats),
                ("tito test 18_compression", ["test", "18_compression"], cfg.test_repeats)]
    rows, data = [], {}
    for label, args, repeats in commands:
        if repeats == 0:
            rows.append([label, f"skipped ({cfg.name} mode)", "", "", ""])
            continue
        times, outcome = [], ""
        for _ in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "tito.cli", *args], cwd=root, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
            outcome = ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})") + \
                (f": {lines[-1].strip()}" if lines else "")
        st = summary(np.array(times))
        data[label] = {**st, "outcome": outcome}
        rows.append([label, format_seconds(st["median"]), f"{format_seconds(st['min'])} – {format_seconds(max(times))}",
                     str(repeats), outcome])
        log(f"  {label}: {format_seconds(st['median'])} ({outcome})")
    notes = ["Wall-clock time of the command as a student runs it (a subprocess, from the repository root), "
             "median over the repeats. `tito test` exports, runs the notebook as a script (its inline tests and "
             "experiments), then the pytest suite of tests/18_compression.",
             "`tito export` with an unchanged source: nbdev still reads and renders the notebook, "
             "but writes nothing."]
    return _table("student_loop", "5. Student loop", ["command", "median", "range", "runs", "outcome"], rows,
                  notes, [], data)


# --------------------------------------------------------------------------------------------
# 6. Compression methods compared
# --------------------------------------------------------------------------------------------

def _student(seed: int, hidden: int) -> Sequential:
    "The notebook's student (`make_student`): 64 -> hidden -> 10."
    rng = np.random.default_rng(seed)
    return Sequential(Linear(64, hidden, rng=rng), ReLU(), Linear(hidden, 10, rng=rng))


def methods_compared(cfg: Config, models: dict, log=print) -> dict:
    """The notebook's Section 13 table: the digits MLP of table 2 as the teacher, pruned, factorized, distilled
    into a small student, and distilled + pruned + INT8. Every row is a file, loaded back and measured."""
    seed = cfg.seeds[0]
    if ("mlp", seed, "dense", 0.0) not in models:
        raise ValueError(f"methods_compared needs table 2's MLP (models must include 'mlp'), got {cfg.models}")
    teacher = models["mlp", seed, "dense", 0.0]
    _, test = _loaders("mlp", seed)
    x_test = np.concatenate([x.data for x, _ in test])
    start = time.perf_counter()

    pruned = models.get(("mlp", seed, METHODS[2], METHODS_SPARSITY))
    if pruned is None:   # table 2 skipped 95%: the same iterative recipe
        pruned = copy.deepcopy(teacher)
        iterative_prune(pruned, _loaders("mlp", seed)[0], METHODS_SPARSITY, steps=cfg.iterative_steps,
                        epochs_per_step=cfg.finetune_epochs // cfg.iterative_steps, lr=FINETUNE_LR, progress=False)

    # Low rank (Section 11): per-layer ranks keeping the energy, then fine-tuning with a cosine-decayed rate.
    ranks = choose_ranks(teacher, cfg.lowrank_energy)
    lowrank = factorize_model(teacher, ranks)
    optimizer = Adam(lowrank.parameters(), lr=FINETUNE_LR)
    fit(lowrank, digits_loaders(batch_size=64, seed=1)[0], CrossEntropyLoss(), optimizer, epochs=cfg.lowrank_epochs,
        progress=False, callbacks=[CosineLR(optimizer, cfg.lowrank_epochs)])

    # Students (Section 12): same initial weights and batch order; alpha = 0 is plain training on the labels.
    students = {}
    for label, alpha in (("labels", 0.0), ("distilled", KD_ALPHA)):
        student = _student(seed, cfg.student_hidden)
        optimizer = Adam(student.parameters(), lr=STUDENT_LR)
        distill(student, teacher, digits_loaders(batch_size=64, seed=seed)[0], epochs=cfg.student_epochs,
                T=KD_T, alpha=alpha, optimizer=optimizer, progress=False,
                callbacks=[CosineLR(optimizer, cfg.student_epochs)])
        students[label] = student

    # All together (Section 13): prune the distilled student step by step, distilling after each step.
    combined = copy.deepcopy(students["distilled"])
    optimizer = Adam(combined.parameters(), lr=FINETUNE_LR)
    for target in polynomial_schedule(0.0, cfg.combo_sparsity, cfg.combo_steps):
        magnitude_prune(combined, float(target))
        distill(combined, teacher, digits_loaders(batch_size=64, seed=1)[0], epochs=cfg.combo_epochs_per_step,
                T=KD_T, alpha=KD_ALPHA, optimizer=optimizer, progress=False)
    trained = time.perf_counter() - start
    log(f"  low rank {ranks}, 2 students and the combination trained in {format_seconds(trained)}")

    fp32, delta32, delta8 = dict(bits=32, index="dense"), dict(bits=32, index="delta"), dict(bits=8, index="delta")
    hidden, s_low, s_combo = cfg.student_hidden, f"{cfg.lowrank_energy:.0%}", f"{cfg.combo_sparsity:.0%}"
    candidates = [
        ("teacher: dense MLP, FP32", teacher, None),
        (f"pruned {METHODS_SPARSITY:.0%} (iterative), FP32", pruned, delta32),
        (f"pruned {METHODS_SPARSITY:.0%} (iterative), INT8", pruned, delta8),
        (f"low rank (energy {s_low}), fine-tuned, FP32", lowrank, None),
        (f"student 64-{hidden}-10, labels only, FP32", students["labels"], None),
        (f"student 64-{hidden}-10, distilled (T={KD_T:g}, alpha={KD_ALPHA:g}), FP32", students["distilled"], None),
        (f"distilled -> pruned {s_combo} -> INT8", combined, delta8),
    ]
    entries = {}
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        for i, (label, model, storage) in enumerate(candidates):
            path = Path(tmp) / f"{i}.ttcz"
            size = save_dense(model, path) if storage is None else compress(model, None, **storage).save(path)
            if size != path.stat().st_size:
                raise AssertionError(f"{label}: save returned {size} bytes, the file has {path.stat().st_size}")
            runnable = load_compressed(path).decompress()   # NumPy has no INT8 matmul: what runs is float32
            entries[label] = {"bytes": size, "flops": count_flops(runnable, (64,)),
                              "nonzero_flops": count_flops(runnable, (64,), nonzero=True),
                              "parameters": sum(p.size for p in runnable.parameters()),
                              "sparsity": measure_sparsity(runnable),
                              "accuracy": evaluate(runnable, test), "model": runnable}

    labels = list(entries)
    for batch in cfg.methods_batches:
        x = Tensor(x_test[:batch])
        measures = {}
        for label in labels:
            model = entries[label]["model"]
            calls = benchmark_inference(model, x, warmup=2, repeats=1, min_time=cfg.speed_min_time)["number"]
            measures[label] = (lambda m=model, n=calls, x=x: benchmark_inference(m, x, warmup=0, repeats=1,
                                                                                  number=n)["median"])
        samples = interleaved(measures, rounds=cfg.speed_rounds, warmup=1)
        for label in labels:
            entries[label][f"batch {batch}"] = {**summary(samples[label]),
                                                "speedup": paired_ratio(samples[labels[0]], samples[label])}
        log(f"  batch {batch}: teacher {format_seconds(entries[labels[0]][f'batch {batch}']['median'])}")

    base = entries[labels[0]]
    rows = []
    for label in labels:
        e = entries[label]
        flops = f"{e['flops']:,}" + (f" ({e['nonzero_flops']:,})" if e["nonzero_flops"] != e["flops"] else "")
        row = [label, f"{e['bytes']:,}", f"{base['bytes'] / e['bytes']:.1f}x", flops]
        for batch in cfg.methods_batches:
            timing = e[f"batch {batch}"]
            row += [format_seconds(timing["median"]), f"{timing['speedup']['median']:.2f}x"]
        row += [f"{100 * e['accuracy']:.1f}", _points(100 * (e["accuracy"] - base["accuracy"]))]
        rows.append(row)
    columns = ["model", "bytes", "vs teacher", "FLOPs (nonzero)"]
    for batch in cfg.methods_batches:
        columns += [f"batch {batch}: latency", f"batch {batch}: speedup"]
    columns += ["accuracy", "Δ points"]
    notes = [
        "Every row is a file written by `save_dense` (FP32 rows) or `CompressedModel.save` (pruned rows: "
        "delta indices, 8-bit), then loaded back: the accuracy on the 360 test digits, the FLOPs "
        "(`count_flops`) and the latency are those of the loaded model. NumPy has no INT8 matrix product, so INT8 "
        "files run decompressed to float32.",
        "FLOPs per digit as the model runs: its dense kernels multiply the zeros too. In parentheses, the nonzero "
        "FLOPs that an ideal sparse kernel would execute.",
        f"Latency: `benchmark_inference` (no_grad, eval mode) on 1 digit and on all {len(x_test)} test digits, median "
        f"over {cfg.speed_rounds} interleaved rounds after warm-up, each timed block repeating the call to fill "
        f"{format_seconds(cfg.speed_min_time)}. Speedup: median of the per-round ratios teacher time / model time.",
        f"Teacher: table 2's seed-{seed} dense MLP. Pruned: table 2's iterative model at {METHODS_SPARSITY:.0%} "
        f"({cfg.iterative_steps} cubic steps x {cfg.finetune_epochs // cfg.iterative_steps} epoch(s), Adam lr "
        f"{FINETUNE_LR:g}). Low rank: `choose_ranks` at energy {cfg.lowrank_energy:g} (ranks {ranks}), "
        f"`factorize_model`, then {cfg.lowrank_epochs} epoch(s) of Adam (lr {FINETUNE_LR:g}, cosine decay).",
        f"Students 64-{hidden}-10: same initial weights and batch order, `distill` for {cfg.student_epochs} epoch(s) "
        f"with Adam (lr {STUDENT_LR:g}, cosine decay), alpha 0 (the labels only: exactly cross-entropy) or "
        f"T = {KD_T:g}, alpha = {KD_ALPHA:g} from the teacher. Combination: the distilled student pruned to "
        f"{cfg.combo_sparsity:.0%} in {cfg.combo_steps} cubic steps, each followed by {cfg.combo_epochs_per_step} "
        f"distillation epoch(s) (Adam lr {FINETUNE_LR:g}), stored with INT8 values. The recipes of the "
        f"notebook's Sections 11-13; training took {format_seconds(trained)}.",
    ]
    data = {"order": labels, "ranks": ranks, "batches": list(cfg.methods_batches),
            "entries": {label: {k: v for k, v in e.items() if k != "model"} for label, e in entries.items()}}
    return _table("methods", "6. Compression methods compared", columns, rows, notes, [], data)


# --------------------------------------------------------------------------------------------

TABLE_KEYS = ("pruning_cost", "accuracy_vs_sparsity", "compression", "recipe", "inference_speed", "student_loop",
              "methods", "structured", *DC_KEYS.values())
NEEDS_MODELS = {"compression", "recipe", "inference_speed", "methods"}   # they start from table 2's models


def run(cfg: Config, root: Path, log=print, only=None) -> dict:
    """Every table, in order, or only those whose key is in `only` (table 2 runs unreported when a table
    needs its models); returns {'config', 'tables'}."""
    unknown = sorted(set(only or ()) - set(TABLE_KEYS))
    if unknown:
        raise ValueError(f"no table named {', '.join(unknown)}; tables: {', '.join(TABLE_KEYS)}")
    tables, seconds = [], {}
    steps = 8

    def step(i, title, fn, key):
        if only is not None and key not in only and not (key == "accuracy_vs_sparsity" and NEEDS_MODELS & set(only)):
            return None, None
        log(f"[{i}/{steps}] {title}")
        start = time.perf_counter()
        out = fn()
        for table in out if isinstance(out, list) else [out[0] if isinstance(out, tuple) else out]:
            table["seconds"] = table.get("seconds", time.perf_counter() - start)
            if only is None or table["key"] in only:
                tables.append(table)
        log(f"      done in {format_seconds(time.perf_counter() - start)}")
        return out if isinstance(out, tuple) else (out, None)

    step(1, "pruning cost", lambda: pruning_cost(cfg, log), "pruning_cost")
    _, models = step(2, "accuracy vs sparsity", lambda: accuracy_vs_sparsity(cfg, log), "accuracy_vs_sparsity")
    step(3, "compression", lambda: compression_sizes(cfg, models, log), "compression")
    step("3b", "compression recipe", lambda: recipe_table(cfg, models, log), "recipe")
    step(4, "inference speed", lambda: inference_speed(cfg, models, log), "inference_speed")
    step(5, "student loop", lambda: student_loop(cfg, root, log), "student_loop")
    step(6, "compression methods compared", lambda: methods_compared(cfg, models, log), "methods")
    step(7, "structured pruning of real architectures", lambda: structured.structured_table(cfg.name, log),
         "structured")
    for kind in DC_SETUPS[cfg.name].models:   # tables 8a and 8b (benchmarks/deep_compression.py)
        step(DC_TITLES[kind].split(".")[0], DC_TITLES[kind].split(". ")[1],
             lambda kind=kind: dc_table(kind, DC_SETUPS[cfg.name], log), DC_KEYS[kind])
    return {"config": asdict(cfg), "tables": tables}
