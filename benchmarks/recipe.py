"""Table 3b, the compression recipe: pruning, quantization-aware fine-tuning, weight sharing,
Huffman coding and the compact header, each step in bytes (Deep Compression style), over seeds
and on two splits of the digits: the package's and an independent one."""
from __future__ import annotations

import copy
import functools
import tempfile
from pathlib import Path

import numpy as np

from tinytorch.compression.pipeline import compress as _compress, save_dense
from tinytorch.compression.prune import iterative_prune
from tinytorch.compression.storage import CompressedModel, load_compressed
from tinytorch.core.losses import CrossEntropyLoss
from tinytorch.core.models import DIGITS_EPOCHS, DIGITS_LR, digits_cnn, digits_mlp, train_digits_model
from tinytorch.core.optimizers import Adam, CosineLR
from tinytorch.core.tensor import manual_seed
from tinytorch.core.training import evaluate, fit
from tinytorch.data.loader import DataLoader, TensorDataset, digits_loaders, load_digits

from .report import table, target

# These tables name every storage setting they measure; unnamed ones keep the values they were measured with
# (fixed-width codes, FP32 biases, 8-bit deltas), not compress's smallest-file defaults.
compress = functools.partial(_compress, coding="fixed", bias_bits=32, index_bits=8)

RECIPE_MIN_RATIO = {"mlp": 50.0, "cnn": 25.0}   # issue 13's targets, at <= 1 point mean loss
PAGE_RATIO = 100.0                               # the course page's "50-100x possible": the aim
MAX_DROP_POINTS = 1.0                            # mean loss over the seeds
MAX_SEED_DROP_POINTS = 1.5                       # and no seed worse than this
FINETUNE_LR = 3e-3                               # the notebook's fine-tuning rate


def _split(kind: str, seed: int, split: str):
    """(make_train_loader, test_loader). "package": the course's split; "independent": the same
    1,797 digits split again at random (by the seed), so no choice was tuned on its test set."""
    image = kind == "cnn"
    if split == "package":
        return (lambda: digits_loaders(image=image, seed=seed + 1)[0]), digits_loaders(image=image, seed=seed)[1]
    X = np.concatenate([load_digits("train", image)[0], load_digits("test", image)[0]])
    y = np.concatenate([load_digits("train", image)[1], load_digits("test", image)[1]])
    order = np.random.default_rng(10_000 + seed).permutation(len(y))
    train, test = order[:1437], order[1437:]
    return (lambda: DataLoader(TensorDataset(X[train], y[train]), batch_size=64, shuffle=True, seed=seed + 1),
            DataLoader(TensorDataset(X[test], y[test]), batch_size=64))


def _dense(kind: str, seed: int, split: str, models: dict, epochs: int | None, make_train):
    "The trained dense model: table 2's on the package split, a plain Adam + cosine loop on the other."
    if split == "package" and (kind, seed, "dense", 0.0) in models:
        return models[kind, seed, "dense", 0.0]
    manual_seed(seed)
    model = (digits_mlp if kind == "mlp" else digits_cnn)(seed=seed)
    if split == "package":
        train_digits_model(model, epochs=epochs, seed=seed)
        return model
    epochs = DIGITS_EPOCHS if epochs is None else epochs
    optimizer = Adam(model.parameters(), lr=DIGITS_LR)
    fit(model, make_train(), CrossEntropyLoss(), optimizer, epochs=epochs, progress=False,
        callbacks=[CosineLR(optimizer, epochs)])
    return model


def _measure(compressed: CompressedModel, folder: Path, test) -> tuple[int, float, dict]:
    "Bytes of the saved file, accuracy of the model loaded back from it, and the bytes by part."
    path = folder / "recipe.ttcz"
    size = compressed.save(path)
    return size, evaluate(load_compressed(path).decompress(), test), compressed.breakdown()


def _recoded(compressed: CompressedModel, coding: str = "fixed", version: int = 2) -> CompressedModel:
    "The same arrays written with another coding or file version."
    return CompressedModel(compressed.architecture, compressed.weights, compressed.biases, coding=coding,
                           version=version)


def run_one(cfg, kind: str, seed: int, split: str, models: dict, folder: Path) -> dict:
    "Every step and search entry for one model: {row label: (bytes, accuracy, breakdown)}, plus the dense run."
    sparsity, bits, index_bits = cfg.recipe[kind]
    make_train, test = _split(kind, seed, split)
    dense = _dense(kind, seed, split, models, cfg.dense_epochs, make_train)
    per_step = cfg.finetune_epochs // cfg.iterative_steps
    out = {"dense FP32": (save_dense(dense, folder / "dense.ttcz"), evaluate(dense, test), None)}
    pruned = {}

    def pruned_to(s: float):
        if s not in pruned:
            model = copy.deepcopy(dense)
            iterative_prune(model, make_train(), s, steps=cfg.iterative_steps, epochs_per_step=per_step,
                            lr=FINETUNE_LR, progress=False)
            pruned[s] = model
        return pruned[s]

    base = pruned_to(sparsity)
    recipe = dict(index_bits=index_bits, bias_bits=8, qat_epochs=cfg.qat_epochs, lr=FINETUNE_LR)
    fp32 = compress(base, None, bits=32, index="delta", index_bits=index_bits)
    out["pruning"] = _measure(_recoded(fp32, version=1), folder, test)
    out["compact header"] = _measure(fp32, folder, test)
    out["quantization"] = _measure(compress(base, None, bits=bits, index_bits=index_bits, bias_bits=8), folder, test)
    qat = compress(base, None, bits=bits, train_data=make_train(), **recipe)
    out["QAT"] = _measure(qat, folder, test)
    out["Huffman coding"] = _measure(_recoded(qat, "huffman"), folder, test)
    out["weight sharing"] = _measure(compress(base, None, bits=bits, coding="huffman", share=True,
                                              train_data=make_train(), **recipe), folder, test)
    for s, b in cfg.recipe_grid[kind]:
        out[f"search {s:.0%} {b}-bit"] = _measure(compress(pruned_to(s), None, bits=b, coding="huffman",
                                                           train_data=make_train(), **recipe), folder, test)
    if kind in cfg.recipe_nm_models:
        for n, m in cfg.recipe_nm:
            out[f"{n}:{m}"] = _measure(compress(dense, None, bits=bits, nm=(n, m), coding="huffman",
                                                train_data=make_train(), **recipe), folder, test)
            out[f"unstructured {1 - n / m:.0%}"] = _measure(
                compress(pruned_to(1 - n / m), None, bits=bits, coding="huffman", train_data=make_train(), **recipe),
                folder, test)
    return out


STEPS = (("dense FP32", "dense FP32 file"),
         ("pruning", "pruned {s} (iterative), FP32 values, {ib}-bit deltas (format v1 header)"),
         ("compact header", "+ compact binary header (format v2)"),
         ("quantization", "+ {b}-bit values and INT8 biases, rounded after training"),
         ("QAT", "+ quantization-aware fine-tuning ({b}-bit, masks kept)"),
         ("Huffman coding", "+ Huffman coding of values and deltas: **the recipe**"),
         ("weight sharing", "weight sharing instead of QAT ({b}-bit k-means, trained centroids), Huffman"))


def _fmt_drop(drops: np.ndarray) -> str:
    return f"{-drops.mean():+.2f} (worst {-drops.max():+.2f})"


def recipe_table(cfg, models: dict, log=print) -> dict:
    """Table 3b. `models` are table 2's (the package split's dense models are reused)."""
    runs = {}   # (kind, split) -> [run_one(...) per seed]
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        for kind in cfg.recipe_models:
            for split in cfg.recipe_splits:
                for seed in cfg.seeds:
                    runs.setdefault((kind, split), []).append(run_one(cfg, kind, seed, split, models, Path(tmp)))
                log(f"  {kind.upper()}, {split} split: {len(cfg.seeds)} seed(s)")

    def stats(kind, split, label) -> dict:
        seeds = runs[kind, split]
        size = np.array([r[label][0] for r in seeds], dtype=float)
        acc = np.array([r[label][1] for r in seeds])
        dense_size = np.array([r["dense FP32"][0] for r in seeds], dtype=float)
        drops = 100 * (np.array([r["dense FP32"][1] for r in seeds]) - acc)
        return {"bytes": float(size.mean()), "ratio": float(dense_size.mean() / size.mean()),
                "acc": acc, "drops": drops}

    rows, targets, data = [], [], {"steps": {}, "search": {}, "nm": {}, "breakdown": {}}
    for kind in cfg.recipe_models:
        sparsity, bits, index_bits = cfg.recipe[kind]
        names = {"s": f"{sparsity:.0%}", "b": bits, "ib": index_bits}
        for split in cfg.recipe_splits:
            previous = None
            for label, text in STEPS:
                st = stats(kind, split, label)
                saved = "" if previous is None or label == "weight sharing" else f"{previous - st['bytes']:,.0f}"
                accuracy = f"{100 * st['acc'].mean():.1f} ± {100 * st['acc'].std(ddof=1):.1f}" if len(st["acc"]) > 1 \
                    else f"{100 * st['acc'][0]:.1f}"
                rows.append([kind.upper(), split, text.format(**names), f"{st['bytes']:,.0f}", saved,
                             f"{st['ratio']:.1f}x", accuracy, _fmt_drop(st["drops"])])
                if label != "weight sharing":
                    previous = st["bytes"]
                data["steps"][f"{kind}|{split}|{label}"] = {"bytes": st["bytes"], "ratio": st["ratio"],
                                                             "drops": st["drops"].tolist()}
            final = stats(kind, split, "Huffman coding")
            seeds = runs[kind, split]
            parts = {k: float(np.mean([r["Huffman coding"][2][k] for r in seeds])) for k in seeds[0]["Huffman coding"][2]}
            data["breakdown"][f"{kind}|{split}"] = parts
            ok = (final["ratio"] >= RECIPE_MIN_RATIO[kind] and final["drops"].mean() <= MAX_DROP_POINTS
                  and final["drops"].max() <= MAX_SEED_DROP_POINTS)
            share = ", ".join(f"{k} {v:,.0f} B" for k, v in parts.items())
            targets.append(target(f"{kind.upper()}, {split} split: >= {RECIPE_MIN_RATIO[kind]:.0f}x at <= "
                                  f"{MAX_DROP_POINTS:g} point mean loss, every seed within {MAX_SEED_DROP_POINTS:g}",
                                  "met" if ok else "missed", f"{final['ratio']:.1f}x at {_fmt_drop(final['drops'])} points",
                                  f"the recipe's file by part (mean): {share}; {len(seeds)} seed(s)"))
            # The smallest file within the limits among the searched settings and the recipe's own.
            found = []
            if final["drops"].mean() <= MAX_DROP_POINTS and final["drops"].max() <= MAX_SEED_DROP_POINTS:
                found.append((final["ratio"], sparsity, bits, final["drops"]))
            for s, b in cfg.recipe_grid[kind]:
                st = stats(kind, split, f"search {s:.0%} {b}-bit")
                data["search"][f"{kind}|{split}|{s}|{b}"] = {"ratio": st["ratio"], "drops": st["drops"].tolist()}
                rows.append([kind.upper(), split, f"search: pruned {s:.0%}, {b}-bit QAT, Huffman",
                             f"{st['bytes']:,.0f}", "", f"{st['ratio']:.1f}x",
                             f"{100 * st['acc'].mean():.1f}", _fmt_drop(st["drops"])])
                if st["drops"].mean() <= MAX_DROP_POINTS and st["drops"].max() <= MAX_SEED_DROP_POINTS:
                    found.append((st["ratio"], s, b, st["drops"]))
            if kind == "mlp":
                best = max(found, default=None)
                targets.append(target(f"MLP, {split} split: the course page's {PAGE_RATIO:.0f}x within "
                                      f"{MAX_DROP_POINTS:g} point (the aim)",
                                      "met" if best and best[0] >= PAGE_RATIO else "missed",
                                      "no setting within the limits" if best is None else
                                      f"smallest file within the limits: {best[0]:.1f}x (pruned {best[1]:.0%}, "
                                      f"{best[2]}-bit, {_fmt_drop(best[3])} points)",
                                      "searched: " + ", ".join(f"{s:.0%} x {b}-bit" for s, b in
                                                               ((sparsity, bits), *cfg.recipe_grid[kind]))))
            if kind in cfg.recipe_nm_models:
                for n, m in cfg.recipe_nm:
                    for label, text in ((f"{n}:{m}", f"N:M {n}:{m} ({1 - n / m:.0%}), {bits}-bit QAT, 2-bit positions, Huffman"),
                                        (f"unstructured {1 - n / m:.0%}", f"unstructured {1 - n / m:.0%} (iterative), "
                                                                          f"{bits}-bit QAT, deltas, Huffman")):
                        st = stats(kind, split, label)
                        data["nm"][f"{kind}|{split}|{label}"] = {"ratio": st["ratio"], "drops": st["drops"].tolist()}
                        rows.append([kind.upper(), split, text, f"{st['bytes']:,.0f}", "", f"{st['ratio']:.1f}x",
                                     f"{100 * st['acc'].mean():.1f}", _fmt_drop(st["drops"])])
    notes = [
        "Each step row adds one technique to the row above it; **saved** is what that step took off the file. "
        "Ratio: the dense FP32 file (`save_dense`) over this file, both as written; accuracy (%, mean ± sd over "
        f"{len(cfg.seeds)} seed(s)) is measured on the model loaded back from the file; Δ points: against each "
        "seed's dense model, mean and the worst seed.",
        "Package split: the course's 1,437/360 digits, dense models from table 2. Independent split: the same "
        "1,797 digits split again at random per seed, the dense model trained by a plain Adam + cosine loop "
        "(`fit`), so no setting here was chosen on its test set.",
        f"Pruning: `iterative_prune`, {cfg.iterative_steps} steps x {cfg.finetune_epochs // cfg.iterative_steps} "
        f"epoch(s); QAT and weight sharing: {cfg.qat_epochs} epochs (Adam {FINETUNE_LR:g}, cosine), the whole "
        "recipe being `compress(model, sparsity, bits=..., coding=\"huffman\", train_data=loader)`. "
        "N:M rows prune the dense model one-shot to the pattern, then run the same QAT.",
    ]
    return table("recipe", "3b. Compression recipe: pruning, QAT, weight sharing, Huffman coding",
                 ["model", "split", "step", "bytes", "saved", "ratio", "accuracy", "Δ points"], rows, notes, targets, data)
