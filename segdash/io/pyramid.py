"""Images of any size, read lazily at several resolutions: a pyramid of planes.

A :class:`Pyramid` is one plane (frame 0) of an image file as a list of levels, level 0 at
full resolution and each next level coarser. Every level is an array-like of shape
``(h, w, C)`` whose indexing by row and column slices reads only that region:

- tiled or pyramidal TIFF and OME-TIFF: tifffile's series levels through its zarr store
  (:class:`~segdash.io.read.TiffPlane`), its axes read by
  :class:`~segdash.io.read.TiffLayout`;
- OME-Zarr: the ``multiscales`` datasets named in the group's metadata, read with ``zarr``;
- PNG and JPEG (and small TIFFs): read whole, their levels made in memory.

Levels the file lacks are made by :func:`area_average` (the mean of each ``f x f`` block,
not every f-th pixel) from the finest level at hand, lazily, region by region
(:class:`AveragedPlane`), and kept on disk by :class:`DiskCachedPlane` in chunks as they are
first read, in a cache folder bounded in bytes (:data:`PYRAMID_CACHE_BYTES`): a zoomed-out
view of an image without a pyramid reads the full image once, not at every pan.

:meth:`Pyramid.at` gives the image at a working resolution (downsample factor): the file's
own level when it has exactly that factor, else the area average of level 0. The dashboard
and ``segdash apply`` both go through it, so a model sees the same pixels in both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from .read import TiffLayout, TiffPlane, read_image, sniff_format

#: Levels are added until the coarsest fits in this many pixels on its longer side.
MIN_LEVEL_SIDE = 256
#: Bytes the on-disk cache of built pyramid levels may hold (oldest images evicted first).
PYRAMID_CACHE_BYTES = 8 * 2**30
#: Chunk side of built levels on disk, in pixels.
CACHE_CHUNK = 512


def area_average(arr: np.ndarray, factor: int) -> np.ndarray:
    """Mean of every ``factor x factor`` block of an ``(h, w, C)`` array.

    Blocks at the right and bottom edges may be partial: they average the pixels they
    hold. Integer dtypes are rounded to the nearest value and keep their dtype.

    Returns
    -------
    numpy.ndarray
        ``(ceil(h / factor), ceil(w / factor), C)``, ``arr``'s dtype.
    """
    factor = int(factor)
    if factor <= 1:
        return arr
    h, w = arr.shape[:2]
    rows = np.arange(0, h, factor)
    cols = np.arange(0, w, factor)
    total = np.add.reduceat(np.add.reduceat(arr.astype(np.float64), rows, axis=0), cols, axis=1)
    ny = np.minimum(rows + factor, h) - rows
    nx = np.minimum(cols + factor, w) - cols
    count = (ny[:, None] * nx[None, :]).reshape(len(rows), len(cols), *(1,) * (arr.ndim - 2))
    mean = total / count
    if arr.dtype.kind in "ui":
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(arr.dtype)
    if arr.dtype.kind == "b":
        return mean >= 0.5
    return mean.astype(arr.dtype)


class AveragedPlane:
    """A coarser level made from ``base`` by :func:`area_average` with ``factor``, region
    by region (reads ``factor``² times the pixels it returns)."""

    def __init__(self, base: Any, factor: int) -> None:
        self.base = base
        self.factor = int(factor)
        h, w, c = base.shape
        self.shape = (-(-h // self.factor), -(-w // self.factor), c)
        self.dtype = np.dtype(base.dtype)
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols = _slices(key, self.shape)
        f = self.factor
        region = self.base[rows.start * f:rows.stop * f, cols.start * f:cols.stop * f]
        return area_average(np.asarray(region), f)


class DiskCachedPlane:
    """``source`` (an array-like level) kept on disk in :data:`CACHE_CHUNK`-square chunks,
    each computed the first time a region touches it.

    The chunks are ``.npy`` files in ``folder`` (read back without pickle); a chunk is
    written to a temporary name and renamed, so a crash never leaves half a chunk.
    """

    def __init__(self, source: Any, folder: Path) -> None:
        self.source = source
        self.folder = folder
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(source.dtype)
        self.ndim = 3
        self._lock = threading.Lock()

    def _chunk(self, cy: int, cx: int) -> np.ndarray:
        path = self.folder / f"{cy}_{cx}.npy"
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.dtype == self.dtype and arr.ndim == 3:
                return arr
        except (OSError, ValueError):
            pass
        s = CACHE_CHUNK
        arr = np.ascontiguousarray(self.source[cy * s:(cy + 1) * s, cx * s:(cx + 1) * s])
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a full or read-only disk: the level is still read, only not kept
        return arr

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        rows, cols = _slices(key, self.shape)
        s = CACHE_CHUNK
        out = np.empty((rows.stop - rows.start, cols.stop - cols.start, self.shape[2]),
                       self.dtype)
        for cy in range(rows.start // s, -(-rows.stop // s)):
            for cx in range(cols.start // s, -(-cols.stop // s)):
                chunk = self._chunk(cy, cx)
                y0, x0 = cy * s, cx * s
                ys = slice(max(rows.start, y0), min(rows.stop, y0 + chunk.shape[0]))
                xs = slice(max(cols.start, x0), min(cols.stop, x0 + chunk.shape[1]))
                out[ys.start - rows.start:ys.stop - rows.start,
                    xs.start - cols.start:xs.stop - cols.start] = \
                    chunk[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        return out


def _slices(key: Any, shape: tuple[int, ...]) -> tuple[slice, slice]:
    key = tuple(key) if isinstance(key, tuple) else (key,)
    key = key + (slice(None),) * (2 - len(key))
    out = []
    for k, n in zip(key[:2], shape[:2], strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            raise IndexError("levels are read by contiguous regions (step 1)")
        out.append(slice(start, max(start, stop)))
    return out[0], out[1]


@dataclass(frozen=True)
class ZarrPlane:
    """Plane ``frame`` of one OME-Zarr dataset (a zarr array at ``path``) as ``(h, w, C)``."""

    path: str
    layout: TiffLayout
    frame: tuple[int, ...]
    dtype: np.dtype

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.layout.height, self.layout.width, self.layout.channels

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        import zarr

        rows, cols = _slices(key, self.shape)
        arr = zarr.open_array(self.path, mode="r")
        region = np.asarray(arr[self.layout.selection(rows, cols, self.frame)])
        return np.ascontiguousarray(self.layout.to_yxc(region), dtype=self.dtype)


class Pyramid:
    """One plane of an image at several resolutions, read lazily.

    Parameters
    ----------
    levels : list of array-like
        ``(h, w, C)`` each, level 0 at full resolution, coarser ones after.
    name : str
        The file's name (errors, results).
    key : str
        Identifies the file's content version (path, modification time, size): names the
        cache of built levels.

    Attributes
    ----------
    shape : tuple of int
        ``(H, W, C)`` of level 0 (C as stored, alpha included).
    dtype : numpy.dtype
    """

    def __init__(self, levels: list[Any], name: str, key: str = "") -> None:
        if not levels:
            raise ImageError(f"{name}: no image level")
        self.name = name
        self.key = key
        self.shape = tuple(int(n) for n in levels[0].shape)
        self.dtype = np.dtype(levels[0].dtype)
        self.file_levels = len(levels)
        self.levels = list(levels)
        self._lock = threading.Lock()
        self._working: dict[int, Any] = {}
        self._complete()

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[2]

    @property
    def nbytes(self) -> int:
        """Bytes of level 0 in memory (what reading it whole would take)."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def factor(self, level: int) -> float:
        """Full-resolution pixels per pixel of ``level`` (along the longer axis)."""
        lv = self.levels[level]
        if self.height >= self.width:
            return self.height / lv.shape[0]
        return self.width / lv.shape[1]

    def _complete(self) -> None:
        """Add levels (built by area average, cached on disk) down to
        :data:`MIN_LEVEL_SIDE`."""
        while max(self.levels[-1].shape[:2]) > MIN_LEVEL_SIDE:
            coarse = AveragedPlane(self.levels[-1], 2)
            if self.key and not isinstance(self.levels[-1], np.ndarray):
                folder = cache_folder(self.key) / f"level{len(self.levels)}"
                coarse = DiskCachedPlane(coarse, folder)
            elif isinstance(self.levels[-1], np.ndarray):
                coarse = area_average(self.levels[-1], 2)  # in memory: a third more at most
            self.levels.append(coarse)

    def region(self, level: int, rows: slice, cols: slice) -> np.ndarray:
        """Pixels ``rows``, ``cols`` of ``level`` as ``(h, w, C)`` in the file's dtype."""
        return np.asarray(self.levels[level][rows, cols])

    def level_for(self, pixels_per_screen_pixel: float) -> int:
        """The coarsest level still at least as fine as the screen (``pixels_per_screen_pixel``
        full-resolution pixels per screen pixel)."""
        best = 0
        for k in range(len(self.levels)):
            if self.factor(k) <= max(pixels_per_screen_pixel, 1.0) * 1.001:
                best = k
        return best

    def at(self, downsample: int) -> Any:
        """The image at working resolution ``downsample`` (1: full resolution) as an
        ``(ceil(H / d), ceil(W / d), C)`` array-like.

        The file's own level when one has exactly that size, else :func:`area_average` of
        level 0 (read region by region)."""
        d = int(downsample)
        if d <= 1:
            return self.levels[0]
        with self._lock:
            if d not in self._working:
                want = (-(-self.height // d), -(-self.width // d))
                found = next((lv for lv in self.levels[:self.file_levels]
                              if tuple(lv.shape[:2]) == want), None)
                self._working[d] = found if found is not None else AveragedPlane(
                    self.levels[0], d)
            return self._working[d]

    def sample(self, pixels: int = 2**18) -> np.ndarray:
        """The whole image from the coarsest level with at least ``pixels`` pixels (or the
        finest if none has): what display and channel ranges are estimated on."""
        pick = 0
        for k, lv in enumerate(self.levels):
            if lv.shape[0] * lv.shape[1] >= pixels:
                pick = k
        return np.asarray(self.levels[pick][:, :])


def cache_folder(key: str) -> Path:
    """Folder of the built levels of the image identified by ``key`` (made by the caller)."""
    root = Path(os.environ.get("SEGDASH_CACHE_DIR")
                or Path(tempfile.gettempdir()) / "segdash-pyramids")
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    folder = root / digest
    if not folder.exists():
        _trim_cache(root, PYRAMID_CACHE_BYTES)
    return folder


def _trim_cache(root: Path, limit: int) -> None:
    """Remove the least recently changed image caches until ``root`` holds under ``limit``."""
    try:
        folders = [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return
    sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folders}
    total = sum(sizes.values())
    for p in sorted(folders, key=lambda p: p.stat().st_mtime):
        if total <= limit:
            break
        shutil.rmtree(p, ignore_errors=True)
        total -= sizes[p]


# -- opening files -------------------------------------------------------------------------

def is_zarr(path: Path) -> bool:
    """A folder holding zarr metadata (an OME-Zarr image)."""
    return path.is_dir() and any((path / n).is_file() for n in (".zattrs", "zarr.json",
                                                                  ".zgroup"))


def open_pyramid(path: str | Path) -> Pyramid:
    """Open an image file or OME-Zarr folder lazily (only headers are read here).

    Raises
    ------
    ImageError
        Not a PNG, JPEG, TIFF or OME-Zarr image; damaged; an unsupported layout.
    """
    path = Path(path)
    if is_zarr(path):
        return _open_ome_zarr(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ImageError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    if sniff_format(head) == "TIFF":
        return _open_tiff_pyramid(path)
    arr = read_image(path)
    return pyramid_of(arr, path.name)


#: Images with more pixels than this are worked on tile by tile (2048²: a whole-image
#: session of 4096² RGB took ~12 s to its first result and 2.4 GB).
LARGE_PIXELS = 2048 * 2048


def open_large(path: str | Path, large_pixels: int = LARGE_PIXELS) -> Pyramid | None:
    """The image at ``path`` as a lazy :class:`Pyramid` when it should be worked on tile by
    tile (an OME-Zarr, a TIFF with pyramid levels, or any TIFF over ``large_pixels``),
    else None (read it whole: PNG, JPEG, small TIFFs).

    Raises
    ------
    ImageError
        A TIFF or OME-Zarr that cannot be read.
    """
    path = Path(path)
    if is_zarr(path):
        return _open_ome_zarr(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None  # the whole-image reader reports it
    if sniff_format(head) != "TIFF":
        return None
    pyramid = _open_tiff_pyramid(path)
    if pyramid.file_levels > 1 or is_large(pyramid.shape, large_pixels):
        return pyramid
    return None


def is_large(shape: tuple[int, ...], large_pixels: int = LARGE_PIXELS) -> bool:
    """Whether an image of ``shape`` ``(H, W, ...)`` is worked on tile by tile (the one rule
    for in-memory images: ``segdash serve IMAGE`` and uploads alike)."""
    return int(shape[0]) * int(shape[1]) > large_pixels


def pyramid_of(image: np.ndarray, name: str = "image") -> Pyramid:
    """An in-memory ``(H, W)`` or ``(H, W, C)`` image as a pyramid (levels in memory)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return Pyramid([arr], name)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _open_tiff_pyramid(path: Path) -> Pyramid:
    import tifffile


    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            levels = [(lv.axes, lv.shape) for lv in series.levels]
            dtype = np.dtype(series.dtype).newbyteorder("=")
    except Exception as exc:
        raise ImageError(f"{path.name}: cannot decode this TIFF file ({exc})") from exc
    if dtype.kind not in "uifb":
        raise ImageError(f"{path.name}: TIFF of dtype {dtype} is not supported")
    stamp = _stamp(path)
    planes = []
    for k, (axes, shape) in enumerate(levels):
        layout = TiffLayout.of(axes, shape, path.name)
        planes.append(TiffPlane(str(path.resolve()), 0, layout, layout.frame_index(0), dtype,
                                stamp, level=k))
    # keep only levels that really are coarser, in order (some files list thumbnails)
    kept = [planes[0]]
    for p in planes[1:]:
        if p.shape[0] < kept[-1].shape[0] and p.shape[2] == kept[0].shape[2]:
            kept.append(p)
    return Pyramid(kept, path.name, key=f"{path.resolve()}|{stamp}")


def _ome_zarr_meta(path: Path) -> dict:
    for name in ("zarr.json", ".zattrs"):
        f = path / name
        if f.is_file():
            if f.stat().st_size > 10_000_000:
                raise ImageError(f"{path.name}: zarr metadata too large")
            try:
                meta = json.loads(f.read_text())
            except (OSError, ValueError) as exc:
                raise ImageError(f"{path.name}: unreadable zarr metadata ({exc})") from exc
            if name == "zarr.json":
                meta = meta.get("attributes", {})
                meta = meta.get("ome", meta)  # OME-Zarr 0.5 nests it under "ome"
            return meta
    raise ImageError(f"{path.name}: no zarr metadata")


def _open_ome_zarr(path: Path) -> Pyramid:
    import zarr

    meta = _ome_zarr_meta(path)
    multiscales = meta.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(
            multiscales[0], dict):
        raise ImageError(f"{path.name}: not an OME-Zarr image (no multiscales metadata)")
    ms = multiscales[0]
    axes_meta = ms.get("axes")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ImageError(f"{path.name}: OME-Zarr without datasets")
    planes = []
    root = path.resolve()
    for d in datasets:
        rel = d.get("path") if isinstance(d, dict) else None
        if (not isinstance(rel, str) or not rel or ".." in Path(rel).parts
                or Path(rel).is_absolute()):
            raise ImageError(f"{path.name}: OME-Zarr dataset path {rel!r} is not inside it")
        try:
            arr = zarr.open_array(str(root / rel), mode="r")
        except Exception as exc:
            raise ImageError(f"{path.name}: cannot open dataset {rel!r} ({exc})") from exc
        if isinstance(axes_meta, list) and len(axes_meta) == arr.ndim:
            names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes_meta]
        else:  # OME-Zarr 0.1-0.3: always tczyx, trailing
            names = list("tczyx"[-arr.ndim:])
        axes = "".join(n[:1] for n in names).upper()
        layout = TiffLayout.of(axes, arr.shape, path.name)
        dtype = np.dtype(arr.dtype)
        if dtype.kind not in "uifb":
            raise ImageError(f"{path.name}: zarr of dtype {dtype} is not supported")
        planes.append(ZarrPlane(str(root / rel), layout, layout.frame_index(0), dtype))
    stamp = max((f.stat().st_mtime_ns for f in [root / n for n in ("zarr.json", ".zattrs")]
                 if f.exists()), default=0)
    return Pyramid(planes, path.name, key=f"{root}|{stamp}")


def default_downsample(shape: tuple[int, ...], side: int = 2048) -> int:
    """Working resolution for an image of ``shape``: 1 up to ``side`` pixels on the longer
    side, else the smallest power of two bringing it within ``side``."""
    longest = max(int(shape[0]), int(shape[1]))
    if longest <= side:
        return 1
    return 2 ** math.ceil(math.log2(longest / side))
