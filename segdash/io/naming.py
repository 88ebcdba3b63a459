"""File names: which files are images, and what the results of an image are called.

One rule for the dashboard's downloads and ``segdash apply``'s outputs: the results of
``NAME.tif`` are ``NAME_labels.png`` (or ``.tif``), ``NAME_proba.tif``, ``NAME_overlay.png``
(or ``.tif`` for a stack), ``NAME_model.skops`` and ``NAME_annotations.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: File name endings of the images segdash reads (a folder or glob is searched for them;
#: the content, not the name, decides how a file is read).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Kinds of result named by :func:`result_name`.
RESULT_KINDS = ("labels", "proba", "overlay", "model", "annotations")


def is_image_name(path: str | Path) -> bool:
    """Whether ``path`` ends like an image file (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def image_stem(name: str | Path) -> str:
    """The name results are derived from: ``a.tif`` -> ``a``, ``a.ome.tif`` -> ``a``."""
    stem = Path(str(name)).stem
    if stem.lower().endswith(".ome"):
        stem = stem[:-4]
    return stem or "image"


def labels_are_png(label_dtype: np.dtype, stack: bool = False) -> bool:
    """Label images are 8-bit PNG when ids fit in uint8 and it is a single plane, else TIFF
    (16-bit ids, or a stack that stays a stack)."""
    return np.dtype(label_dtype) == np.uint8 and not stack


def result_name(image_name: str | Path, kind: str, label_dtype: np.dtype = np.uint8,
                stack: bool = False) -> str:
    """File name of result ``kind`` (one of :data:`RESULT_KINDS`) of image ``image_name``.

    Parameters
    ----------
    image_name : str or Path
        The image's file name.
    kind : str
        ``"labels"``, ``"proba"`` (float32 TIFF), ``"overlay"`` (PNG, TIFF for a stack),
        ``"model"`` or ``"annotations"``.
    label_dtype : numpy.dtype
        Dtype of the labels (the model's ``label_dtype``): decides PNG or TIFF labels.
    stack : bool
        The image is a stack (outputs stay stacks: TIFF).
    """
    stem = image_stem(image_name)
    if kind == "labels":
        return f"{stem}_labels.{'png' if labels_are_png(label_dtype, stack) else 'tif'}"
    if kind == "proba":
        return f"{stem}_proba.tif"
    if kind == "overlay":
        return f"{stem}_overlay.{'tif' if stack else 'png'}"
    if kind == "model":
        return f"{stem}_model.skops"
    if kind == "annotations":
        return f"{stem}_annotations.json"
    raise ValueError(f"unknown result kind {kind!r}; kinds: {', '.join(RESULT_KINDS)}")
