"""Reading images safely into memory.

Images are read from bytes or paths, recognised by their content (not their name), with a
pixel limit checked from the header before any pixel is decoded. PNG and JPEG go through
Pillow restricted to those formats; TIFF through tifffile (16-bit, float, multi-channel),
its axes interpreted by :class:`TiffLayout` (also used by the lazy readers of
:mod:`segdash.io.sources`).

Files from untrusted people (uploads to a server) go through :func:`read_untrusted`: the
decoders (zlib, libpng, libjpeg, tifffile's codecs) run in a sandboxed child process
(:func:`segdash.sandbox.run_isolated`) with memory and time limits, which writes the pixels
to a ``.npy`` file; the server maps that file (numpy parses its short header in Python) and
never runs a native decoder on the upload's bytes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..contract import drop_alpha, image_channels
from ..errors import ImageError
from ..sandbox import IsolatedFailure, Limits, run_isolated

#: Largest image read into memory, in pixels (height x width). Larger slides go through
#: the tiled batch path.
MAX_IMAGE_PIXELS = 16384 * 16384
#: Largest file accepted, in bytes.
MAX_FILE_BYTES = 2_000_000_000

_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
}


def sniff_format(head: bytes) -> str | None:
    """``"PNG"``, ``"JPEG"`` or ``"TIFF"`` from a file's first bytes, else None."""
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    return None


def _as_bytes(source: str | Path | bytes | IO[bytes], tiff_by_path: bool = False
              ) -> tuple[bytes | Path, str]:
    """The content of ``source`` and its name; with ``tiff_by_path``, a TIFF file given by
    its path comes back as that path (tifffile reads it in place)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = "upload"
    elif isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path.name}: file too large ({size} bytes)")
        if tiff_by_path and size:
            with open(path, "rb") as fh:
                if sniff_format(fh.read(8)) == "TIFF":
                    return path, path.name
        data = path.read_bytes()
        name = path.name
    else:
        data = source.read(MAX_FILE_BYTES + 1)
        name = getattr(source, "name", "upload")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large ({len(data)} bytes)")
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    return data, str(name)


def _reason(exc: BaseException) -> str:
    """A decoder's message without the in-memory file's repr (``<_io.BytesIO ...>``)."""
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)) or type(exc).__name__


def _check_pixels(name: str, h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ImageError(
            f"{name}: image of {w}x{h} pixels exceeds the limit of {max_pixels} pixels; "
            "use `segdash apply` for very large images"
        )


def _pillow_limit(image_module: Any) -> None:
    """Align Pillow's decompression-bomb limit with :data:`MAX_IMAGE_PIXELS`.

    Pillow refuses images over ``Image.MAX_IMAGE_PIXELS`` (default 89.5 M pixels, about
    9459²) before segdash's own check sees them, so a 10000² PNG was refused although
    segdash documents 16384². segdash raises Pillow's limit to its own (never lowers it);
    its own check (``max_pixels``, from the header) stays the one that refuses.
    """
    current = image_module.MAX_IMAGE_PIXELS
    if current is not None and current < MAX_IMAGE_PIXELS:
        image_module.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


def _read_pil(data: bytes, name: str, fmt: str, max_pixels: int) -> np.ndarray:
    from PIL import Image

    _pillow_limit(Image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                _check_pixels(name, im.height, im.width, max_pixels)
                im.load()  # decoding errors surface here, inside the try
                mode = im.mode
                if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX", "LA"):
                    im = im.convert("L" if mode in ("LA",) else "RGB")
                elif mode == "1":
                    im = im.convert("L")
                arr = np.asarray(im)
    except (ImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode this {fmt} file ({_reason(exc)})") from exc
    if arr.dtype == np.int32:  # Pillow's "I" mode holds 16-bit PNGs
        arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr
    return np.ascontiguousarray(arr)


#: Axes of one TIFF plane: rows, columns, samples (RGB) and channels.
_PLANE_AXES = "YXSC"


@dataclass(frozen=True)
class TiffLayout:
    """How a TIFF series' axes (tifffile's ``series.axes``) map to planes of ``(H, W, C)``.

    Samples (``S``) and channels (``C``) become the channel axis; every other axis (time,
    depth, pages, ...) counts planes. The one place segdash interprets TIFF axes.

    Attributes
    ----------
    axes : str
        Upper-case axes of the series, e.g. ``"TZCYX"``.
    shape : tuple of int
        Size of each axis.
    """

    axes: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, axes: str, shape: tuple[int, ...], name: str) -> TiffLayout:
        """Check and build a layout; ``name`` names the file in errors.

        Raises
        ------
        ImageError
            No Y or X axis, or an empty axis.
        """
        axes = axes.upper()
        shape = tuple(int(n) for n in shape)
        if "Y" not in axes or "X" not in axes:
            raise ImageError(f"{name}: TIFF without image axes ({axes})")
        if min(shape) < 1:
            raise ImageError(f"{name}: empty TIFF (shape {shape})")
        return cls(axes, shape)

    def _size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)]

    @property
    def height(self) -> int:
        return self._size("Y")

    @property
    def width(self) -> int:
        return self._size("X")

    @property
    def channels(self) -> int:
        return int(np.prod([n for a, n in zip(self.axes, self.shape, strict=True)
                            if a in "SC"]))

    @property
    def plane_axes(self) -> str:
        return "".join(a for a in self.axes if a in _PLANE_AXES)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        """Sizes of the axes that count planes, in file order."""
        return tuple(n for a, n in zip(self.axes, self.shape, strict=True)
                     if a not in _PLANE_AXES)

    @property
    def frames(self) -> int:
        return int(np.prod(self.lead_shape))

    @property
    def is_stack(self) -> bool:
        """A stack by content or by declaration (a time axis of length 1 stays a stack)."""
        return any(a not in _PLANE_AXES for a in self.axes)

    def frame_index(self, index: int) -> tuple[int, ...]:
        """Index along the plane-counting axes of plane ``index`` (C order)."""
        lead = self.lead_shape
        return tuple(int(i) for i in np.unravel_index(index, lead)) if lead else ()

    def selection(self, rows: slice, cols: slice, frame: tuple[int, ...]) -> tuple:
        """Index into the series array reading ``rows``, ``cols`` of plane ``frame``."""
        it = iter(frame)
        out: list[Any] = []
        for axis in self.axes:
            if axis == "Y":
                out.append(rows)
            elif axis == "X":
                out.append(cols)
            elif axis in "SC":
                out.append(slice(None))
            else:
                out.append(next(it))
        return tuple(out)

    def to_yxc(self, region: np.ndarray) -> np.ndarray:
        """One plane's region, in :attr:`plane_axes` order, as ``(h, w, C)``."""
        axes = self.plane_axes
        order = [axes.index("Y"), axes.index("X")] + [axes.index(a) for a in axes if a in "SC"]
        out = np.transpose(region, order)
        return out.reshape(out.shape[0], out.shape[1], -1)


def _read_tiff(data: bytes | Path, name: str, max_pixels: int) -> np.ndarray:
    import tifffile

    try:
        # A path is read by tifffile as it needs (no copy of the whole file in memory).
        with tifffile.TiffFile(data if isinstance(data, Path) else io.BytesIO(data)) as tif:
            series = tif.series[0]
            layout = TiffLayout.of(series.axes, series.shape, name)
            _check_pixels(name, layout.height, layout.width, max_pixels)
            if layout.height * layout.width * layout.channels > 4 * max_pixels:
                raise ImageError(f"{name}: image of {series.shape} values is too large")
            # A stack: the first plane (the dashboard shows one; batch apply reads them all).
            first = layout.selection(slice(None), slice(None), layout.frame_index(0))
            if layout.frames > 1 and len(tif.pages) > 1:
                arr = series.asarray(key=0)
                n = len(layout.plane_axes)
                arr = arr.reshape((-1, *arr.shape[-n:]))[0]
            else:
                arr = series.asarray()[first]
            arr = layout.to_yxc(arr)
    except (ImageError, MemoryError):
        raise
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode this TIFF file ({_reason(exc)})") from exc
    if arr.dtype.kind not in "uifb":
        raise ImageError(f"{name}: TIFF of dtype {arr.dtype} is not supported")
    return np.ascontiguousarray(drop_alpha(arr))


def read_image(
    source: str | Path | bytes | IO[bytes], max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read a PNG, JPEG or TIFF image into memory.

    Parameters
    ----------
    source : path, bytes or binary file
        The file or its content. The format is recognised from the content.
    max_pixels : int
        Refuse images with more pixels than this (checked before decoding).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` grey or ``(H, W, C)``, in the file's dtype (uint8, uint16, float32...).
        Palette images become RGB; alpha channels are dropped. For a multi-page TIFF, the
        first plane.

    Raises
    ------
    ImageError
        Unsupported format, damaged file, or too many pixels (the message names the file).
    """
    data, name = _as_bytes(source, tiff_by_path=True)
    fmt = "TIFF" if isinstance(data, Path) else sniff_format(data[:8])
    if fmt is None:
        raise ImageError(
            f"{name}: not a PNG, JPEG or TIFF image (unrecognised content)"
        )
    if fmt == "TIFF":
        arr = _read_tiff(data, name, max_pixels)
    else:
        arr = _read_pil(data, name, fmt, max_pixels)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    try:
        image_channels(arr)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from exc
    return arr


#: Memory a decoding child may use when the caller gives no budget, bytes.
DECODE_MEMORY_BYTES = 4_000_000_000
#: Wall-clock seconds a decoding child may run when the caller gives no limit.
DECODE_SECONDS = 300.0
#: What the sandbox helper imports once, so each decoding child starts warm.
_DECODE_PRELOAD = ("numpy", "PIL.Image", "PIL.PngImagePlugin", "PIL.JpegImagePlugin",
                   "tifffile", "segdash.io.read")


def read_frame(path: str | Path, frame: int = 0, max_pixels: int | None = None
               ) -> tuple[np.ndarray, int]:
    """Frame ``frame`` of an image file, and how many frames the file has.

    The one reading of a frame of a stack (a project's images): PNG and JPEG through
    :func:`read_image` (one frame), TIFF plane by plane through :class:`TiffPlane` (the
    axes by :class:`TiffLayout`, as ``segdash apply`` reads them).

    Parameters
    ----------
    path : path
        The file (its content decides the format).
    frame : int
        Which frame (0: the first).
    max_pixels : int, optional
        Refuse a TIFF plane of more pixels (height x width) than this; PNG and JPEG get
        :data:`MAX_IMAGE_PIXELS` whatever is given. None: no limit for TIFF (its planes
        are read region by region).

    Returns
    -------
    pixels : numpy.ndarray
        ``(H, W)`` grey or ``(H, W, C)``, alpha dropped.
    frames : int
        Frames of the file (1 for PNG and JPEG).

    Raises
    ------
    ImageError
        Not a readable image, or no such frame (the message names the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ImageError(f"{path.name}: cannot read ({exc.strerror or exc})") from exc
    if sniff_format(head) != "TIFF":
        if frame != 0:
            raise ImageError(f"{path.name}: no frame {frame} (it has 1)")
        return read_image(path, max_pixels or MAX_IMAGE_PIXELS), 1
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape, dtype = series.axes, series.shape, np.dtype(series.dtype)
    except Exception as exc:
        raise ImageError(f"{path.name}: cannot decode this TIFF file ({_reason(exc)})"
                         ) from exc
    layout = TiffLayout.of(axes, shape, path.name)
    if dtype.kind not in "uifb":
        raise ImageError(f"{path.name}: TIFF of dtype {dtype} is not supported")
    if not 0 <= frame < layout.frames:
        raise ImageError(f"{path.name}: no frame {frame} (it has {layout.frames})")
    if max_pixels is not None:
        _check_pixels(path.name, layout.height, layout.width, max_pixels)
    stat = path.stat()
    plane = TiffPlane(str(path.resolve()), 0, layout, layout.frame_index(frame),
                      dtype.newbyteorder("="), (stat.st_mtime_ns, stat.st_size))
    try:
        arr = drop_alpha(plane[:, :, :])
    except (ImageError, MemoryError):
        raise
    except Exception as exc:
        raise ImageError(f"{path.name}: cannot decode this TIFF file ({_reason(exc)})"
                         ) from exc
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr), layout.frames


def _decode_to_npy(payload: bytes) -> dict:
    """In the sandboxed child: decode the file named in ``payload`` (JSON: ``source``,
    ``target``, ``max_pixels``, ``frame``: None for :func:`read_image`'s reading, a number
    for :func:`read_frame`'s) and write its pixels to ``target`` as ``.npy``."""
    import json

    job = json.loads(payload)
    if job.get("frame") is None:
        arr, frames = read_image(job["source"], max_pixels=int(job["max_pixels"])), 1
    else:
        arr, frames = read_frame(job["source"], int(job["frame"]), int(job["max_pixels"]))
    np.save(job["target"], arr, allow_pickle=False)
    return {"shape": list(arr.shape), "dtype": arr.dtype.str, "frames": frames}


@contextlib.contextmanager
def received_file(data: bytes) -> Iterator[Path]:
    """``data`` as a file in a private temporary folder, removed afterwards: bytes handed
    to the Python API take the path of an upload received on disk (:func:`read_untrusted`),
    so no decoder runs on them in this process either."""
    with tempfile.TemporaryDirectory(prefix="segdash-upload-") as tmp:
        path = Path(tmp) / "received"
        path.write_bytes(data)
        yield path


def read_untrusted(path: str | Path, out: str | Path, name: str | None = None,
                   memory_bytes: int | None = None, seconds: float | None = None,
                   max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an untrusted image file outside this process; its pixels, memory-mapped.

    Parameters
    ----------
    path : path
        The file (an upload). Its name is not trusted: the format comes from its content.
    out : path
        A ``.npy`` file to write the pixels to (the caller removes it when done; the
        returned array maps it, and stays valid after it is unlinked).
    name : str, optional
        The file's name in messages (default: ``path``'s name).
    memory_bytes : int, optional
        Memory the decoder may use (default :data:`DECODE_MEMORY_BYTES`).
    seconds : float, optional
        Wall-clock time the decoder may take (default :data:`DECODE_SECONDS`).
    max_pixels : int
        Refuse images with more pixels than this (checked from the header).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, read-only, backed by ``out`` (pages are read from
        disk as they are used), as :func:`read_image` would return it.

    Raises
    ------
    ImageError
        Not a readable image, too large, or the decoder failed, ran out of memory or time,
        or crashed (the message says which; the server is unaffected).
    """
    return _decode_isolated(path, out, None, name, memory_bytes, seconds, max_pixels)[0]


def read_frame_untrusted(path: str | Path, out: str | Path, frame: int = 0,
                         name: str | None = None, memory_bytes: int | None = None,
                         seconds: float | None = None, max_pixels: int = MAX_IMAGE_PIXELS
                         ) -> tuple[np.ndarray, int]:
    """:func:`read_frame` of an untrusted file, decoded outside this process as
    :func:`read_untrusted` does (same parameters, and ``frame``).

    Returns
    -------
    pixels : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, read-only, mapped from ``out``.
    frames : int
        Frames of the file, as the child reported them (at least 1).

    Raises
    ------
    ImageError
        As :func:`read_untrusted`; also no such frame.
    """
    return _decode_isolated(path, out, int(frame), name, memory_bytes, seconds, max_pixels)


def _decode_isolated(path: str | Path, out: str | Path, frame: int | None, name: str | None,
                     memory_bytes: int | None, seconds: float | None, max_pixels: int
                     ) -> tuple[np.ndarray, int]:
    import json

    path, out = Path(path), Path(out)
    name = name or path.name
    memory = int(memory_bytes or DECODE_MEMORY_BYTES)
    wall = float(seconds or DECODE_SECONDS)
    limits = Limits(memory_bytes=memory, cpu_seconds=max(1, int(wall)), wall_seconds=wall)
    job = json.dumps({"source": str(path), "target": str(out), "max_pixels": max_pixels,
                      "frame": frame})
    try:
        reply = run_isolated("segdash.io.read:_decode_to_npy", job.encode(), limits,
                             preload=_DECODE_PRELOAD)
    except IsolatedFailure as exc:
        out.unlink(missing_ok=True)
        raise ImageError(f"{name}: the image decoder {exc}; the file was not opened "
                         f"(decoding may use {memory / 1e9:.3g} GB and {wall:g} s)") from exc
    if not reply["ok"]:
        out.unlink(missing_ok=True)
        message = str(reply.get("message") or reply.get("error"))
        if "MemoryError" in str(reply.get("error")):
            message = (f"{path.name}: decoding needs more memory than the limit of "
                       f"{memory / 1e9:.3g} GB")
        # the child named the file by its path on disk: give the user's name instead
        raise ImageError(message.replace(path.name, name))
    frames = reply["result"].get("frames", 1)
    if not isinstance(frames, int) or frames < 1:
        raise ImageError(f"{name}: the decoder's output is not the image it reported")
    return _map_decoded(out, reply["result"], name), frames


def _map_decoded(out: Path, expected: Any, name: str) -> np.ndarray:
    """The child's ``.npy``, mapped read-only, checked against what the child said it wrote
    (the child handled hostile bytes: its file is checked like any input)."""
    try:
        arr = np.load(out, mmap_mode="r", allow_pickle=False)
        shape, dtype = tuple(int(n) for n in expected["shape"]), np.dtype(expected["dtype"])
    except Exception as exc:
        raise ImageError(f"{name}: the decoder's output could not be read ({exc})") from exc
    if arr.shape != shape or arr.dtype != dtype or arr.dtype.kind not in "uifb" \
            or arr.ndim not in (2, 3):
        raise ImageError(f"{name}: the decoder's output is not the image it reported")
    try:
        image_channels(arr)
    except ImageError as exc:
        raise ImageError(f"{name}: {exc}") from exc
    return arr


@functools.lru_cache(maxsize=16)
def _open_tiff(path: str, series: int, stamp: tuple[int, int],
               level: int = 0) -> tuple[Any, Any]:
    """An open TIFF series (pyramid ``level``) as an array-like (memory map or zarr array),
    cached per process.

    ``stamp`` (modification time, size) is part of the key so a rewritten file is reopened.
    Returns the TiffFile too, to keep its file handle alive with the cached reader.
    """
    import tifffile

    tif = tifffile.TiffFile(path)
    if level == 0:
        try:
            reader = tifffile.memmap(path, series=series, mode="r")
            return tif, reader
        except Exception:  # compressed, tiled, non-native byte order...: decode region-wise
            pass
    import zarr

    reader = zarr.open_array(tif.series[series].aszarr(level=level), mode="r")
    return tif, reader


#: Decoded TIFF regions kept per process, in bytes (least recently used dropped first).
#: Tiling reads each tile's region once for the tile and again for each neighbour's halo,
#: row of tiles after row of tiles; keeping about three rows of tiles decoded makes that
#: one decode per region (8192² RGB batch: 1.6-2 s of single-threaded decoding a pass).
REGION_CACHE_BYTES = 192 * 2**20


class _RegionCache:
    """A small thread-safe LRU of decoded, read-only regions."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            arr = self._items.get(key)
            if arr is not None:
                self._items.move_to_end(key)
            return arr

    def put(self, key: Any, arr: np.ndarray) -> None:
        if arr.nbytes > self.limit // 4:  # a region this large is not read again soon
            return
        arr.flags.writeable = False  # shared by every reader of the region
        with self._lock:
            if key in self._items:
                return
            self._items[key] = arr
            self.bytes += arr.nbytes
            while self.bytes > self.limit:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes


_REGIONS = _RegionCache(REGION_CACHE_BYTES)


def _slice_key(key: tuple[slice, ...]) -> tuple | None:
    """A hashable form of plain slices, or None (other indices are not cached)."""
    if not all(isinstance(k, slice) for k in key):
        return None
    return tuple((k.start, k.stop, k.step) for k in key)


@dataclass(frozen=True)
class TiffPlane:
    """One plane of a TIFF series as a read-only ``(H, W, C)`` array-like.

    Indexing reads only the requested region (see :func:`_open_tiff`); instances hold no
    open file, so they pickle to Dask workers, which must see the file at the same path.
    """

    path: str
    series: int
    layout: TiffLayout
    frame: tuple[int, ...]
    dtype: np.dtype
    stamp: tuple[int, int]
    #: Pyramid level of the series (0: full resolution).
    level: int = 0
    #: Keep decoded regions (:data:`REGION_CACHE_BYTES`, read-only arrays): for tiling,
    #: whose halos read each region again (``segdash apply``); off for the dashboard.
    cache_regions: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.layout.height, self.layout.width, self.layout.channels

    @property
    def ndim(self) -> int:
        return 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = tuple(key) + (slice(None),) * (3 - len(key))
        sk = _slice_key(key)
        cache_key = None if sk is None or not self.cache_regions else (self, sk)
        if cache_key is not None:
            hit = _REGIONS.get(cache_key)
            if hit is not None:
                return hit
        _, reader = _open_tiff(self.path, self.series, self.stamp, self.level)
        region = np.asarray(reader[self.layout.selection(key[0], key[1], self.frame)])
        plane = self.layout.to_yxc(region)
        out = np.ascontiguousarray(plane[:, :, key[2]], dtype=self.dtype)
        if cache_key is not None:
            if out is region or np.shares_memory(out, region):
                out = out.copy()  # never a read-only view of the reader's own buffer
            _REGIONS.put(cache_key, out)
        return out
