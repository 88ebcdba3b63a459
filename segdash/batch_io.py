"""Inputs and outputs of :mod:`segdash.batch`: lazy image sources and band-wise writers.

Reading: PNG and JPEG are read whole with :func:`segdash.io.read_image` (the dashboard's
reader, so a model sees the same values in both places). TIFF files are read lazily, region
by region, where the tiles are computed: through a memory map when the pixels are stored
uncompressed and contiguous, else through tifffile's zarr store (which decodes only the TIFF
tiles or strips a region touches). Every page or frame of a TIFF stack or time series is a
plane of its own.

Writing: outputs are written in horizontal bands, in order, as the tiles of each band are
done, so no output is ever whole in memory: PNG through a small streaming encoder, TIFF
through tifffile (tiled, compressed) fed from a thread. Each output is written to a hidden
temporary file and renamed into place when the whole image has succeeded.
"""

from __future__ import annotations

import functools
import glob
import os
import queue
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError
from .io import read_image, sniff_format, tiff_to_yxc

#: File name endings a folder or glob is searched for.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: TIFF tiles of written outputs, in pixels.
OUTPUT_TIFF_TILE = 256


# -- finding inputs ------------------------------------------------------------------------

def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named by files, folders and glob patterns.

    Parameters
    ----------
    items : sequence of str
        File paths (taken whatever their name: the content decides), folders (their PNG,
        JPEG and TIFF files, not recursive) and glob patterns (``**`` recurses).

    Returns
    -------
    files : list of Path
        In the order given, folders and globs sorted by name, each file once.
    errors : list of (str, str)
        Items that name nothing: the item and why.
    """
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append((item, "folder holds no PNG, JPEG or TIFF file"))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append((item, "no PNG, JPEG or TIFF file matches this pattern"))
        else:
            found = []
            errors.append((item, "no such file or folder"))
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, errors


# -- lazy TIFF planes ----------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _open_tiff(path: str, series: int, stamp: tuple[int, int]) -> tuple[Any, Any]:
    """An open TIFF series as an array-like (memory map or zarr array), cached per process.

    ``stamp`` (modification time, size) is part of the key so a rewritten file is reopened.
    Returns the TiffFile too, to keep its file handle alive with the cached reader.
    """
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        reader = tifffile.memmap(path, series=series, mode="r")
        return tif, reader
    except Exception:  # compressed, tiled, non-native byte order...: decode region-wise
        pass
    import zarr

    reader = zarr.open_array(tif.series[series].aszarr(), mode="r")
    return tif, reader


@dataclass(frozen=True)
class TiffPlane:
    """One plane of a TIFF series as a read-only ``(H, W, C)`` array-like.

    Indexing reads only the requested region (see :func:`_open_tiff`); instances hold no
    open file, so they pickle to Dask workers, which must see the file at the same path.
    """

    path: str
    series: int
    axes: str
    series_shape: tuple[int, ...]
    frame: tuple[int, ...]
    dtype: np.dtype
    stamp: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        sizes = dict(zip(self.axes, self.series_shape, strict=True))
        channels = int(np.prod([sizes[a] for a in self.axes if a in "SC"]))
        return sizes["Y"], sizes["X"], channels

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (3 - len(key))
        _, reader = _open_tiff(self.path, self.series, self.stamp)
        frame = iter(self.frame)
        selection = []
        for axis in self.axes:
            if axis == "Y":
                selection.append(key[0])
            elif axis == "X":
                selection.append(key[1])
            elif axis in "SC":
                selection.append(slice(None))
            else:
                selection.append(next(frame))
        region = np.asarray(reader[tuple(selection)])
        plane = tiff_to_yxc(region, "".join(a for a in self.axes if a in "YXSC"))
        if plane.ndim == 2:
            plane = plane[:, :, None]
        return np.ascontiguousarray(plane[:, :, key[2]], dtype=self.dtype)


# -- image sources -------------------------------------------------------------------------

@dataclass
class ImageSource:
    """An input file: its planes (pages, frames), their shape and dtype.

    Attributes
    ----------
    path : Path
    frames : int
        Number of planes (1 for a single image).
    shape : tuple of int
        ``(H, W, C)`` of each plane, C as stored in the file.
    dtype : numpy.dtype
    is_stack : bool
        A multi-page TIFF or time series (outputs stay stacks), even with one plane.
    """

    path: Path
    frames: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    is_stack: bool
    _tiff: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_lazy(self) -> bool:
        """Read region by region where the tiles are computed (TIFF), not here."""
        return self._tiff is not None

    def plane(self, index: int, chunks: tuple) -> Any:
        """Plane ``index`` as a dask array of ``chunks`` (``(rows, cols, (C,))``)."""
        import dask.array as da
        from dask.base import tokenize

        if self._tiff is None:
            # PNG/JPEG: read again now (planning read it only to check it), so that only
            # the images being tiled are in memory, not a whole folder's.
            arr = read_image(self.path)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.shape != self.shape or arr.dtype != self.dtype:
                raise ImageError(f"{self.name}: the file changed while being processed")
            return da.from_array(arr, chunks=chunks)
        t = self._tiff
        lead = [n for a, n in zip(t["axes"], t["series_shape"], strict=True)
                if a not in "YXSC"]
        frame = tuple(int(i) for i in np.unravel_index(index, lead)) if lead else ()
        path = str(self.path.resolve())
        plane = TiffPlane(path, 0, t["axes"], t["series_shape"], frame, self.dtype, t["stamp"])
        name = "segdash-read-" + tokenize(path, t["stamp"], frame, chunks)
        return da.from_array(plane, chunks=chunks, name=name, lock=False, asarray=True,
                             fancy=False, meta=np.empty((0, 0, 0), self.dtype))


def open_source(path: Path) -> ImageSource:
    """Read an input's header (TIFF) or pixels (PNG, JPEG).

    Raises
    ------
    ImageError
        Not a PNG, JPEG or TIFF; damaged; of an unsupported layout or dtype. The message
        names the file.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ImageError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageError(f"{path.name}: not a PNG, JPEG or TIFF image (unrecognised content)")
    if fmt != "TIFF":
        arr = read_image(path)  # decoded once to check it; read again by plane()
        shape = arr.shape if arr.ndim == 3 else (*arr.shape, 1)
        return ImageSource(path, 1, shape, arr.dtype, False)
    return _open_tiff_source(path)


def _open_tiff_source(path: Path) -> ImageSource:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            shape = tuple(int(n) for n in series.shape)
            dtype = np.dtype(series.dtype)
    except Exception as exc:
        raise ImageError(f"{path.name}: cannot decode this TIFF file ({exc})") from exc
    if "Y" not in axes or "X" not in axes:
        raise ImageError(f"{path.name}: TIFF without image axes ({axes})")
    if dtype.kind not in "uifb":
        raise ImageError(f"{path.name}: TIFF of dtype {dtype} is not supported")
    if min(shape) < 1:
        raise ImageError(f"{path.name}: empty TIFF (shape {shape})")
    frames = int(np.prod([n for a, n in zip(axes, shape, strict=True) if a not in "YXSC"]))
    stat = path.stat()
    info = {"axes": axes, "series_shape": shape, "stamp": (stat.st_mtime_ns, stat.st_size)}
    sizes = dict(zip(axes, shape, strict=True))
    channels = int(np.prod([sizes[a] for a in axes if a in "SC"]))
    # A stack by content or by declaration (a time axis of length 1 stays a stack).
    is_stack = frames > 1 or any(a not in "YXSC" for a in axes)
    return ImageSource(path, frames, (sizes["Y"], sizes["X"], channels),
                       dtype.newbyteorder("="), is_stack, _tiff=info)


# -- writers -------------------------------------------------------------------------------

class PngStreamWriter:
    """Write an 8-bit grey or RGB PNG band by band, never holding the whole image.

    Parameters
    ----------
    path : Path
    width, height : int
    channels : int
        1 (grey) or 3 (RGB).
    """

    _COLOR_TYPE = {1: 0, 3: 2}

    def __init__(self, path: Path, width: int, height: int, channels: int) -> None:
        self._fh = open(path, "wb")  # closed by close() or abort()
        self._width, self._height, self._channels = width, height, channels
        self._rows = 0
        self._z = zlib.compressobj(6)
        self._pending = bytearray()
        self._fh.write(b"\x89PNG\r\n\x1a\n")
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                         self._COLOR_TYPE[channels], 0, 0, 0))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._fh.write(struct.pack(">I", len(data)) + kind + data)
        self._fh.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def write(self, rows: np.ndarray) -> None:
        """Append ``(n, width[, channels])`` uint8 rows."""
        n = rows.shape[0]
        raw = np.zeros((n, 1 + self._width * self._channels), np.uint8)  # filter 0 per row
        raw[:, 1:] = rows.reshape(n, -1)
        self._pending += self._z.compress(raw.tobytes())
        self._rows += n
        if len(self._pending) >= 1 << 20:
            self._chunk(b"IDAT", bytes(self._pending))
            self._pending.clear()

    def close(self) -> None:
        if self._rows != self._height:
            raise RuntimeError(f"PNG got {self._rows} rows of {self._height}")
        self._pending += self._z.flush()
        self._chunk(b"IDAT", bytes(self._pending))
        self._chunk(b"IEND", b"")
        self._fh.close()

    def abort(self) -> None:
        self._fh.close()


class _Abort:
    """Sent to a TIFF writer thread to stop it."""


class TiffStreamWriter:
    """Write a (multi-page) tiled, compressed TIFF band by band from a background thread.

    Bands of rows arrive in order (plane after plane) through a bounded queue; the thread
    cuts them into TIFF tiles for tifffile, so at most a few bands are held.

    Parameters
    ----------
    path : Path
    shape : tuple of int
        ``(H, W)``, ``(H, W, S)``, ``(N, H, W)`` or ``(N, H, W, S)``.
    dtype : numpy.dtype
    stack : bool
        The first axis counts planes.
    photometric : str
        ``"minisblack"`` or ``"rgb"``.
    level : int
        zlib compression level.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any, stack: bool,
                 photometric: str = "minisblack", level: int = 6) -> None:
        self._shape = tuple(int(n) for n in shape)
        self._planes = self._shape[0] if stack else 1
        self._plane_shape = self._shape[1:] if stack else self._shape
        self._dtype = np.dtype(dtype)
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        nbytes = int(np.prod(self._shape)) * self._dtype.itemsize
        kwargs = dict(shape=self._shape, dtype=self._dtype, tile=(OUTPUT_TIFF_TILE,) * 2,
                      photometric=photometric, compression="zlib",
                      compressionargs={"level": level}, bigtiff=nbytes > 2**31 - 2**25)
        if len(self._plane_shape) == 3:
            kwargs["planarconfig"] = "contig"
        self._thread = threading.Thread(target=self._run, args=(path, kwargs), daemon=True)
        self._thread.start()

    def _run(self, path: Path, kwargs: dict) -> None:
        import tifffile

        try:
            tifffile.imwrite(path, data=self._tiles(), **kwargs)
        except BaseException as exc:  # reported to the caller by write()/close()
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _next_rows(self) -> np.ndarray:
        item = self._queue.get()
        if isinstance(item, _Abort):
            raise RuntimeError("aborted")
        return item

    def _tiles(self) -> Iterator[np.ndarray]:
        t = OUTPUT_TIFF_TILE
        h, w = self._plane_shape[:2]
        extra = self._plane_shape[2:]
        for _ in range(self._planes):
            carry = np.empty((0, w, *extra), self._dtype)
            for y0 in range(0, h, t):
                need = min(t, h - y0)
                parts, have = [carry], carry.shape[0]
                while have < need:
                    rows = self._next_rows()
                    parts.append(rows)
                    have += rows.shape[0]
                band = np.concatenate(parts) if len(parts) > 1 else carry
                carry = band[need:]
                for x0 in range(0, w, t):
                    tile = np.zeros((t, t, *extra), self._dtype)
                    piece = band[:need, x0:x0 + t]
                    tile[:piece.shape[0], :piece.shape[1]] = piece
                    yield tile
            if carry.shape[0]:
                raise RuntimeError("more rows than the image has")

    def write(self, rows: np.ndarray) -> None:
        """Append rows ``(n, W[, S])`` of the current plane."""
        while True:
            if self._error is not None:
                raise RuntimeError(f"writing the TIFF failed: {self._error}") from self._error
            if not self._thread.is_alive():
                raise RuntimeError("the TIFF writer stopped")
            try:
                self._queue.put(np.asarray(rows, self._dtype), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"writing the TIFF failed: {self._error}") from self._error

    def abort(self) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(_Abort(), timeout=5)
            except queue.Full:
                pass
            self._thread.join(timeout=30)


def temporary_path(final: Path) -> Path:
    """A hidden file beside ``final`` to write into before renaming it into place."""
    return final.with_name(f".{final.name}.{os.getpid()}.part")
