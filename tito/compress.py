"""`tito compress`: the main job. Train a digits model, prune it with fine-tuning, quantize it to
INT8, write the file (`.ttcz`, the format of `tinytorch.compression.storage.load_compressed`), load it back and
print what was gained and what it cost."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .errors import TitoError


def _check(args) -> None:
    if not 0.0 <= args.sparsity < 1.0:
        raise TitoError(f"--sparsity must be in [0, 1), got {args.sparsity}", exit_code=2)
    if not 2 <= args.bits <= 8:
        raise TitoError(f"--bits must be from 2 to 8, got {args.bits}", exit_code=2)
    if not 2 <= args.index_bits <= 16:
        raise TitoError(f"--index-bits must be from 2 to 16, got {args.index_bits}", exit_code=2)
    if not args.lr > 0:
        raise TitoError(f"--lr must be positive, got {args.lr}", exit_code=2)
    if args.steps < 1:
        raise TitoError(f"--steps must be at least 1, got {args.steps}", exit_code=2)
    if args.out is not None and args.out.exists() and args.out.is_dir():
        raise TitoError(f"--out must be a file path, but {args.out} is a folder", exit_code=2)


def _row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


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
    build = digits_mlp if args.model == "mlp" else digits_cnn
    model = build(seed=args.seed)
    print(f"training the digits {args.model.upper()} (seed {args.seed}) ...", flush=True)
    history = train_digits_model(model, seed=args.seed, progress=None)
    dense_acc = history["val_acc"][-1]
    test_loader = digits_loaders(image=args.model == "cnn", seed=args.seed)[1]
    # Fine-tuning sees the batches in a different order from the first training run.
    train_loader = digits_loaders(image=args.model == "cnn", seed=args.seed + 1)[0]

    with tempfile.TemporaryDirectory(prefix="tito-compress-") as tmp:
        dense_bytes = save_dense(model, Path(tmp) / "dense.ttcz")
        print(f"pruning to {args.sparsity:.0%} in {args.steps} steps with fine-tuning ...", flush=True)
        iterative_prune(model, train_loader, args.sparsity, steps=args.steps,
                        epochs_per_step=args.epochs_per_step, lr=args.lr, progress=None)
        pruned_acc = evaluate(model, test_loader)
        per_layer = layer_sparsity(model)
        # INT8 is the course page's recipe; fewer bits per value is what takes the file past 40x.
        files = []
        for bits in sorted({8, args.bits}, reverse=True):
            compressed = compress(model, sparsity=None, bits=bits, index="delta",
                                  index_bits=args.index_bits, bias_bits=args.bias_bits)
            keep = bits == args.bits and args.out is not None
            path = args.out if keep else Path(tmp) / f"digits_{args.model}_{bits}bit.ttcz"
            size = compressed.save(path)
            accuracy = evaluate(load_compressed(path).decompress(), test_loader)
            files.append((bits, size, accuracy, compressed.breakdown()))

    print()
    print(f"Compression report: digits {args.model.upper()}, seed {args.seed}, 360 test images")
    widths = (36, 12, 8, 10)
    print(_row(("model", "file bytes", "ratio", "accuracy"), widths))
    print(_row(("-" * 36, "-" * 12, "-" * 8, "-" * 10), widths))
    print(_row(("dense FP32", f"{dense_bytes:,}", "1.0x", f"{dense_acc:.2%}"), widths))
    print(_row((f"pruned {measure_sparsity(model):.1%} (FP32, in memory)", "-", "-", f"{pruned_acc:.2%}"), widths))
    for bits, size, accuracy, _ in files:
        print(_row((f"pruned + {bits}-bit values, file reloaded", f"{size:,}", f"{dense_bytes / size:.1f}x",
                    f"{accuracy:.2%}"), widths))
    print()
    print("sparsity by layer: " + ", ".join(f"{name} {value:.1%}" for name, value in per_layer.items()))
    bits, size, final_acc, breakdown = files[-1]
    print(f"{bits}-bit file bytes by part: " + ", ".join(f"{k} {v:,}" for k, v in breakdown.items()))
    print(f"{bits}-bit file: {dense_bytes / size:.1f}x smaller, accuracy {100 * (final_acc - dense_acc):+.2f} points; "
          f"done in {time.perf_counter() - start:.1f} s")
    if args.out:
        print(f"wrote {args.out}")
    return 0
