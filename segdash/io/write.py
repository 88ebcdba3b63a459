"""Writing results: label images, PNGs, and band-by-band streaming writers for huge outputs.

Outputs of ``segdash apply`` are written in horizontal bands, in order, as the tiles of each
band are done, so no output is ever whole in memory: PNG through a small streaming encoder,
TIFF through tifffile (tiled, compressed) fed from a thread. Each is written to a hidden
temporary file (:func:`temporary_path`) and renamed into place when the whole image has
succeeded.
"""

from __future__ import annotations

import io
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .naming import labels_are_png

#: TIFF tiles of written outputs, in pixels.
OUTPUT_TIFF_TILE = 256


def write_labels(labels: np.ndarray, target: str | Path | IO[bytes]) -> str:
    """Write a label image: 8-bit PNG for uint8 ids, else a 16-bit TIFF (see
    :func:`segdash.io.naming.labels_are_png`).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` class ids (or ``(N, H, W)``, written as a multi-page TIFF).
    target : path or binary file

    Returns
    -------
    str
        The format written, ``"PNG"`` or ``"TIFF"``.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels_are_png(labels.dtype):
        from PIL import Image

        Image.fromarray(labels).save(target, format="PNG")
        return "PNG"
    import tifffile

    dtype = np.uint8 if labels.dtype == np.uint8 else np.uint16
    tifffile.imwrite(target, labels.astype(dtype), compression="zlib")
    return "TIFF"


def write_png(pixels: np.ndarray, target: str | Path | IO[bytes]) -> None:
    """Write ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 as PNG."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(target, format="PNG")


def encode(writer: Callable[[Any, IO[bytes]], Any], data: Any) -> bytes:
    """The bytes ``writer(data, file)`` writes (e.g. ``encode(write_labels, labels)``)."""
    buf = io.BytesIO()
    writer(data, buf)
    return buf.getvalue()


def temporary_path(final: Path) -> Path:
    """A hidden file beside ``final`` to write into before renaming it into place."""
    return final.with_name(f".{final.name}.{os.getpid()}.part")


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


def proba_writer(path: Path, shape: tuple[int, ...], stack: bool = False) -> TiffStreamWriter:
    """The writer of class probabilities (``NAME_proba.tif``), for ``segdash apply --proba``
    and the dashboard's download alike.

    Parameters
    ----------
    path : Path
    shape : tuple of int
        ``(H, W, K)``, or ``(N, H, W, K)`` for a stack: K bands in ``model.classes_`` order.
    stack : bool
        The first axis counts planes.

    Returns
    -------
    TiffStreamWriter
        A float32, tiled TIFF, bands interleaved per pixel; compressed fast (level 1:
        probabilities compress poorly, and a higher level only costs time).
    """
    return TiffStreamWriter(path, shape, np.float32, stack, level=1)


def proba_bytes(proba: np.ndarray) -> bytes:
    """An ``(H, W, K)`` probability image as the bytes of a ``NAME_proba.tif``
    (:func:`proba_writer`'s file)."""
    import tempfile

    proba = np.asarray(proba, np.float32)
    with tempfile.TemporaryDirectory(prefix="segdash-proba-") as folder:
        path = Path(folder) / "proba.tif"
        writer = proba_writer(path, proba.shape)
        try:
            writer.write(proba)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        return path.read_bytes()


def write_pyramid_tiff(path: str | Path, shape: tuple[int, int, int], dtype: Any,
                       tile_of: Callable[[int, int, int, int, int], np.ndarray],
                       tile: int = 512, min_side: int = 256) -> int:
    """Write a tiled pyramidal OME-TIFF level by level, tile by tile (never whole in memory).

    Level 0 is the first image; each next level halves both sides (``ceil``) and is stored
    as a SubIFD of it (``subfiletype=1``), down to ``min_side`` pixels on the longer side:
    the layout whole-slide viewers and tifffile's ``series.levels`` read.

    Parameters
    ----------
    path : path
        File to write (``.ome.tif``).
    shape : (H, W, C)
        Level 0's shape; C = 3 is written as RGB.
    dtype : numpy dtype
    tile_of : callable
        ``tile_of(level, y0, y1, x0, x1)`` gives level ``level``'s pixels rows
        ``[y0, y1)``, columns ``[x0, x1)`` as ``(y1 - y0, x1 - x0, C)``.
    tile : int
        TIFF tile side (a multiple of 16).
    min_side : int
        The coarsest level's longer side is at most this.

    Returns
    -------
    int
        Levels written.
    """
    import tifffile

    h, w, c = (int(n) for n in shape)
    sizes = [(h, w)]
    while max(sizes[-1]) > min_side:
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))

    def tiles(level: int) -> Iterator[np.ndarray]:
        lh, lw = sizes[level]
        for y0 in range(0, lh, tile):
            for x0 in range(0, lw, tile):
                y1, x1 = min(y0 + tile, lh), min(x0 + tile, lw)
                block = np.zeros((tile, tile, c), dtype)
                block[:y1 - y0, :x1 - x0] = tile_of(level, y0, y1, x0, x1)
                yield block

    photometric = "rgb" if c == 3 else "minisblack"
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for level, (lh, lw) in enumerate(sizes):
            tw.write(tiles(level), shape=(lh, lw, c) if c > 1 else (lh, lw), dtype=dtype,
                     tile=(tile, tile), photometric=photometric, compression="zlib",
                     compressionargs={"level": 1},
                     subifds=len(sizes) - 1 if level == 0 else None,
                     subfiletype=1 if level else 0, metadata={"axes": "YXS"} if level == 0
                     and c > 1 else None)
    return len(sizes)
