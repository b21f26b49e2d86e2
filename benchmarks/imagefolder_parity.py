"""The same images from a folder of PNGs as from the IDX files: does `dataset = "imagefolder"`
train the default job's dense model as well?

Fashion-MNIST's 70000 images are written losslessly as PNG files in class folders
(`train/<class>/`, `test/<class>/`), then the default job's dense model (resnet20, its
recipe) is trained per seed on each source: `fashion-mnist` (the IDX files) and `imagefolder`
(the PNGs: decoded with Pillow, normalised with statistics of its training split, validation
held out the same way). Each training starts from an empty cache. Test accuracy is on the
same 10000 test images either way; the imagefolder loader's first (decoding) and second
(cached) load times are recorded too.

    python benchmarks/imagefolder_parity.py --seeds 0,1

writes benchmarks/results/imagefolder_parity.json and its table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _machine import command_line, machine, publish, save_results  # noqa: E402

from prunesearch.app.config import load_config  # noqa: E402
from prunesearch.app.prepare import load_run_data  # noqa: E402
from prunesearch.data.idx_datasets import load_fashion_mnist  # noqa: E402
from prunesearch.training.dense import dense_model  # noqa: E402


def write_png_folders(root: Path) -> int:
    """Fashion-MNIST's train and test images as PNG files under root/{train,test}/<class>/."""
    raw = load_fashion_mnist()  # pixels in [0, 1]: byte / 255
    written = 0
    for split, (x, y) in (("train", (raw.train_x, raw.train_y)),
                          ("test", (raw.test_x, raw.test_y))):
        pixels = (x.reshape(len(x), 28, 28) * 255).round().numpy().astype(np.uint8)
        for i, (image, label) in enumerate(zip(pixels, y.tolist(), strict=True)):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        files = write_png_folders(root / "png")
        write_s = time.perf_counter() - start
        os.environ["PRUNESEARCH_CACHE"] = str(root / "cache")
        sources = {"idx (fashion-mnist)": ["data.dataset=fashion-mnist"],
                   "png folders (imagefolder)": ["data.dataset=imagefolder",
                                                 f"data.data_dir={root / 'png'}"]}
        loads = {}
        for label, overrides in sources.items():
            cfg = load_config(None, overrides)
            times = []
            for _ in range(2):  # the imagefolder loader decodes once, then reads its cache
                start = time.perf_counter()
                data = load_run_data(cfg, torch.device("cpu"))
                times.append(time.perf_counter() - start)
            loads[label] = times
            for seed in seeds:
                _, meta = dense_model(cfg.model, data, seed=seed, device=torch.device("cpu"),
                                      cache_dir=root / "dense" / label.split()[0],
                                      progress=False)
                rows.append({"source": label, "seed": seed, "val_acc": meta["val_score"],
                             "test_acc": meta["test_score"], "train_s": meta["seconds"],
                             "normalization": data.normalization})
                print(rows[-1], flush=True)
    save_results("imagefolder_parity", {"command": command_line(), "machine": machine(),
                                        "png_files": files, "png_write_s": write_s,
                                        "load_s": loads, "rows": rows})
    lines = ["| source | test acc (mean of seeds) | val acc | load s (first, cached) |",
             "|---|---|---|---|"]
    for label in sources:
        mine = [r for r in rows if r["source"] == label]
        test = statistics.mean(r["test_acc"] for r in mine)
        val = statistics.mean(r["val_acc"] for r in mine)
        first, again = loads[label]
        lines.append(f"| {label} | {100 * test:.2f} | {100 * val:.2f} | "
                     f"{first:.1f}, {again:.1f} |")
    publish("imagefolder_parity", lines)


if __name__ == "__main__":
    main()
