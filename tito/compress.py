"""`tito compress`: the main job. Train a digits model, prune it with fine-tuning, store it with
INT8 values (the course page's recipe) and with the best recipe (quantization-aware fine-tuning
at fewer bits, Huffman coding), write the `.ttcz` files, load them back and print what was
gained and what it cost, the best file's bytes by part."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .errors import TitoError


def _check(args) -> None:
    from tinytorch.compression.pipeline import DIGITS_RECIPES

    # The best file lets compress() choose each weight's delta width by bytes unless the user set one;
    # the INT8 row stores fixed-width deltas, so it takes the recipe's width.
    args.best_index_bits = args.index_bits
    for name, value in DIGITS_RECIPES[args.model].items():   # what the benchmark measured best
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 0.0 <= args.sparsity < 1.0:
        raise TitoError(f"--sparsity must be in [0, 1), got {args.sparsity}", exit_code=2)
    if not 2 <= args.bits <= 8:
        raise TitoError(f"--bits must be from 2 to 8, got {args.bits}", exit_code=2)
    if not 2 <= args.index_bits <= 16:
        raise TitoError(f"--index-bits must be from 2 to 16, got {args.index_bits}", exit_code=2)
    if not args.lr > 0:
        raise TitoError(f"--lr must be positive, got {args.lr}", exit_code=2)
    if args.qat_epochs < 1:
        raise TitoError(f"--qat-epochs must be at least 1, got {args.qat_epochs}", exit_code=2)
    if args.steps < 1:
        raise TitoError(f"--steps must be at least 1, got {args.steps}", exit_code=2)
    if args.out is not None and args.out.exists() and args.out.is_dir():
        raise TitoError(f"--out must be a file path, but {args.out} is a folder", exit_code=2)


def _table(header, rows) -> list[str]:
    "Lines of a plain-text table: the first column left-aligned, the others right; each as wide as its widest cell."
    cells = [[str(c) for c in row] for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [line(cells[0]), line(["-" * w for w in widths]), *(line(row) for row in cells[1:])]


def run_compress(args) -> int:
    _check(args)
    from tinytorch.compression.pipeline import compress, save_dense
    from tinytorch.compression.prune import iterative_prune, layer_sparsity, measure_sparsity
    from tinytorch.compression.storage import load_compressed
    from tinytorch.core.models import digits_cnn, digits_mlp, train_digits_model
    from tinytorch.core.tensor import manual_seed
    from tinytorch.core.training import evaluate
    from tinytorch.data.loader import digits_loaders

    start = time.perf_counter()
    manual_seed(args.seed)
    image = args.model == "cnn"
    model = (digits_cnn if image else digits_mlp)(seed=args.seed)
    print(f"training the digits {args.model.upper()} (seed {args.seed}) ...", flush=True)
    dense_acc = train_digits_model(model, seed=args.seed, progress=None)["val_acc"][-1]
    test_loader = digits_loaders(image=image, seed=args.seed)[1]

    def train_loader():
        # Fine-tuning sees the batches in another order than the first training run, the same each time.
        return digits_loaders(image=image, seed=args.seed + 1)[0]

    with tempfile.TemporaryDirectory(prefix="tito-compress-") as tmp:
        def saved(compressed, path):
            size = compressed.save(path)
            return size, evaluate(load_compressed(path).decompress(), test_loader), compressed.breakdown()

        dense_bytes = save_dense(model, Path(tmp) / "dense.ttcz")
        print(f"pruning to {args.sparsity:.0%} in {args.steps} steps with fine-tuning ...", flush=True)
        iterative_prune(model, train_loader(), args.sparsity, steps=args.steps,
                        epochs_per_step=args.epochs_per_step, lr=args.lr, progress=None)
        pruned_acc = evaluate(model, test_loader)
        per_layer = layer_sparsity(model)
        # The course page's recipe (INT8 values after training), then the best one: the quantizer in
        # the fine-tuning loop, Huffman-coded streams.
        int8 = saved(compress(model, sparsity=None, bits=8, index_bits=args.index_bits, bias_bits=args.bias_bits,
                              coding="fixed"),
                     Path(tmp) / "int8.ttcz")
        how = "weight sharing" if args.share else "quantization-aware fine-tuning"
        print(f"{how} with {args.bits}-bit values for {args.qat_epochs} epochs ...", flush=True)
        best = compress(model, sparsity=None, bits=args.bits, index_bits=args.best_index_bits, bias_bits=args.bias_bits,
                        coding=args.coding, train_data=train_loader(), qat_epochs=args.qat_epochs, lr=args.lr,
                        share=args.share)
        final = saved(best, args.out if args.out is not None else Path(tmp) / "best.ttcz")

    print()
    print(f"Compression report: digits {args.model.upper()}, seed {args.seed}, 360 test images")
    rows = [("dense FP32", f"{dense_bytes:,}", "1.0x", f"{dense_acc:.2%}"),
            (f"pruned {measure_sparsity(model):.1%} (FP32, in memory)", "-", "-", f"{pruned_acc:.2%}")]
    recipe = f"{'shared' if args.share else 'QAT'} {args.bits}-bit values, {args.coding}, file reloaded"
    for label, (size, accuracy, _) in (("pruned + INT8 values, file reloaded", int8), (f"pruned + {recipe}", final)):
        rows.append((label, f"{size:,}", f"{dense_bytes / size:.1f}x", f"{accuracy:.2%}"))
    print("\n".join(_table(("model", "file bytes", "ratio", "accuracy"), rows)))
    print()
    print("sparsity by layer: " + ", ".join(f"{name} {value:.1%}" for name, value in per_layer.items()))
    size, final_acc, breakdown = final
    print("best file bytes by part: " + ", ".join(f"{k} {v:,}" for k, v in breakdown.items()))
    print(f"best file: {dense_bytes / size:.1f}x smaller, accuracy {100 * (final_acc - dense_acc):+.2f} points; "
          f"done in {time.perf_counter() - start:.1f} s")
    if args.out:
        print(f"wrote {args.out}")
    return 0
