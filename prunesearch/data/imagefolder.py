"""`dataset = "imagefolder"`: a folder of images in class subfolders, no code.

`data.data_dir` holds `train/<class>/<image>` and `test/<class>/<image>`, or the class folders
themselves (then a seeded `data.test_fraction` of the images is the test set); validation is
held out of the training images (`data.val_size`) like every dataset's. Classes are the
training class folders in sorted order. Images are decoded with Pillow, as one channel when
every image is grey and as RGB otherwise, and resized to `data.image_size` x `data.image_size`
(unset: they must all have one size). The decoded pixels are cached under
`$PRUNESEARCH_CACHE/data`, keyed by every file's path, size and modification time and the
decoding settings, so later runs do not decode again (the cache holds tensors only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from prunesearch.data.folders import required_folder
from prunesearch.data.splits import RawDataset, hold_out_test
from prunesearch.errors import DataError
from prunesearch.fileio import default_cache_dir

if TYPE_CHECKING:
    import PIL.Image

log = logging.getLogger("prunesearch")
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
              ".pgm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
LAYOUT = "train/<class>/<image> and test/<class>/<image>, or <class>/<image>"
CACHE_FORMAT = 1


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _listing(folder: Path, classes: list[str] | None) -> list[tuple[Path, int]]:
    """(image, class index) of every image under `folder`'s class folders; `classes`: the
    training split's, which every other split must have exactly."""
    found = [p.name for p in _class_folders(folder)]
    if classes is None:
        classes = found
        if len(classes) < 2:
            raise DataError(f"'{folder}' holds {len(classes)} class folder(s); put each class's "
                            f"images in a folder of its own ({LAYOUT}), at least 2 classes.")
    missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
    if missing or extra:
        what = (f"has no folder for class {missing}" if missing
                else f"has class folder(s) {extra} that the training images lack")
        raise DataError(f"'{folder}' {what}; give every split the same class folders.")
    listing = []
    for index, name in enumerate(classes):
        images = _images(folder / name)
        if not images:
            raise DataError(f"Class folder '{folder / name}' holds no image (looked for "
                            f"{', '.join(sorted(EXTENSIONS))}); add its images or remove it.")
        listing += [(p, index) for p in images]
    return listing


def pixels_of(image: PIL.Image.Image, grey: bool, size: int | None) -> np.ndarray:
    """A decoded image as uint8 (1 or 3, H, W), one channel when `grey`, resized to `size`
    square (None: as it is)."""
    from PIL import Image

    image = image.convert("L" if grey else "RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if grey else pixels.transpose(2, 0, 1)


def _decode(path: Path, grey: bool, size: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return pixels_of(image, grey, size)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"Cannot decode the image '{path}' ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]}); replace or remove the "
                        f"file.") from None


def _is_grey(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.mode in GREY_MODES
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"Cannot read the image '{path}' ({type(err).__name__}); replace or "
                        f"remove the file.") from None


def _decoded(listing: list[tuple[Path, int]], grey: bool,
             size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = []
    for path, _ in listing:
        image = _decode(path, grey, size)
        if pixels and image.shape != pixels[0].shape:
            raise DataError(f"'{path}' is {image.shape[2]}x{image.shape[1]} pixels but "
                            f"'{listing[0][0]}' is {pixels[0].shape[2]}x{pixels[0].shape[1]}; "
                            f"set data.image_size to resize every image to one size.")
        pixels.append(image)
    labels = torch.tensor([label for _, label in listing], dtype=torch.int64)
    return torch.from_numpy(np.stack(pixels)), labels


def _cache_path(splits: dict[str, list[tuple[Path, int]]], size: int | None) -> Path:
    made_of = {"format": CACHE_FORMAT, "size": size, "splits": {
        split: [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns, label]
                for p, label in listing] for split, listing in splits.items()}}
    key = hashlib.sha256(json.dumps(made_of).encode()).hexdigest()[:16]
    return default_cache_dir().parent / "data" / f"imagefolder-{key}.pt"


def _load_cached(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or not ours: decode again and replace it
        log.warning("decoded image cache %s is unreadable; decoding again", path)
        return None
    return saved if isinstance(saved, dict) else None


def load_imagefolder(data_dir: Path | None, image_size: int | None = None,
                     test_fraction: float = 0.2) -> RawDataset:
    """The images under `data_dir` (see the module docstring), scaled to [0, 1]."""
    folder = required_folder(data_dir, "imagefolder", LAYOUT)
    if (folder / "val").is_dir():
        raise DataError(f"'{folder}' has a val folder; prunesearch holds the validation "
                        f"images out of train (data.val_size), so move val's class folders' "
                        f"images into train's.")
    if (folder / "train").is_dir():
        if not (folder / "test").is_dir():
            raise DataError(f"'{folder}' has a train folder but no test folder; add "
                            f"test/<class>/ folders, or put the class folders directly in "
                            f"'{folder}' to hold out data.test_fraction as the test set.")
        train = _listing(folder / "train", None)
        classes = [p.name for p in _class_folders(folder / "train")]
        splits = {"train": train, "test": _listing(folder / "test", classes)}
    else:
        splits = {"all": _listing(folder, None)}
        classes = [p.name for p in _class_folders(folder)]
    path = _cache_path(splits, image_size)
    saved = _load_cached(path) if path.exists() else None
    if saved is None:
        every = [p for listing in splits.values() for p, _ in listing]
        log.info("decoding %d images under %s", len(every), folder)
        grey = all(_is_grey(p) for p in every)
        saved = {}
        for split, listing in splits.items():
            saved[f"{split}_x"], saved[f"{split}_y"] = _decoded(listing, grey, image_size)
        shapes = {tuple(saved[f"{s}_x"].shape[1:]) for s in splits}
        if len(shapes) > 1:
            raise DataError(f"The train and test images under '{folder}' differ in size "
                            f"({sorted(shapes)}); set data.image_size to resize them to one.")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    scaled = {k: (v.float() / 255 if k.endswith("_x") else v) for k, v in saved.items()}
    if "all_x" in scaled:
        raw = hold_out_test(scaled["all_x"], scaled["all_y"], test_fraction)
    else:
        raw = RawDataset(scaled["train_x"], scaled["train_y"], scaled["test_x"],
                         scaled["test_y"], 0)
    return raw._replace(num_classes=len(classes))
