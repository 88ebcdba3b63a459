"""Reading images safely and writing label images.

Images are read from bytes or paths, recognised by their content (not their name), with a
pixel limit checked from the header before any pixel is decoded. PNG and JPEG go through
Pillow restricted to those formats; TIFF through tifffile (16-bit, float, multi-channel).
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import ImageError

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


def _as_bytes(source: str | Path | bytes | IO[bytes]) -> tuple[bytes, str]:
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
        data = path.read_bytes()
        name = path.name
    else:
        data = source.read(MAX_FILE_BYTES + 1)
        name = getattr(source, "name", "upload")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large ({len(data)} bytes)")
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


def _read_pil(data: bytes, name: str, fmt: str, max_pixels: int) -> np.ndarray:
    from PIL import Image

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
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode this {fmt} file ({_reason(exc)})") from exc
    if arr.dtype == np.int32:  # Pillow's "I" mode holds 16-bit PNGs
        arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr
    return np.ascontiguousarray(arr)


def tiff_to_yxc(arr: np.ndarray, axes: str) -> np.ndarray:
    """Reorder one TIFF plane to ``(H, W)`` or ``(H, W, C)`` from tifffile's axes string.

    Samples (``S``) or channels (``C``) become the last axis; any other leading axis
    (time, depth, pages) must already have been indexed away.
    """
    axes = axes.upper()
    keep = [a for a in axes if a in "YXSC"]
    if len(keep) != len(axes):
        raise ImageError(f"TIFF plane has unexpected axes {axes!r}")
    order = [axes.index("Y"), axes.index("X")] + [axes.index(a) for a in axes if a in "SC"]
    out = np.transpose(arr, order)
    if out.ndim == 4:  # both S and C: fold into one channel axis
        out = out.reshape(out.shape[0], out.shape[1], -1)
    return out


def _read_tiff(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            if "Y" not in axes or "X" not in axes:
                raise ImageError(f"{name}: TIFF without image axes ({axes})")
            h, w = series.shape[axes.index("Y")], series.shape[axes.index("X")]
            _check_pixels(name, h, w, max_pixels)
            page_axes = "".join(a for a in axes if a in "YXSC")
            n_planes = int(np.prod([n for a, n in zip(axes, series.shape, strict=True)
                                    if a not in "YXSC"]))
            n_values = h * w * int(np.prod([n for a, n in zip(axes, series.shape, strict=True)
                                            if a in "SC"]))
            if n_values > 4 * max_pixels:
                raise ImageError(f"{name}: image of {series.shape} values is too large")
            if n_planes > 1:
                # A stack: the dashboard shows its first plane (batch apply reads them all).
                arr = series.asarray(key=0) if len(tif.pages) > 1 else series.asarray()
                if arr.ndim > len(page_axes):
                    arr = arr.reshape((-1, *arr.shape[-len(page_axes):]))[0]
            else:
                arr = series.asarray()
                arr = arr.reshape([n for a, n in zip(axes, series.shape, strict=True)
                                   if a in "YXSC"])
            arr = tiff_to_yxc(arr, page_axes)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode this TIFF file ({_reason(exc)})") from exc
    if arr.dtype.kind not in "uifb":
        raise ImageError(f"{name}: TIFF of dtype {arr.dtype} is not supported")
    if arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


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
    data, name = _as_bytes(source)
    fmt = sniff_format(data[:8])
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
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise ImageError(f"{name}: unsupported image shape {arr.shape}")
    return arr


def label_format(labels: np.ndarray) -> str:
    """``"PNG"`` for label images with ids up to 255, else ``"TIFF"``."""
    return "PNG" if int(np.max(labels, initial=0)) <= 255 else "TIFF"


def write_labels(labels: np.ndarray, target: str | Path | IO[bytes]) -> str:
    """Write a label image: 8-bit PNG when ids fit in 0..255, else 16-bit TIFF.

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
    fmt = "PNG" if labels.ndim == 2 and label_format(labels) == "PNG" else "TIFF"
    if fmt == "PNG":
        from PIL import Image

        Image.fromarray(labels.astype(np.uint8)).save(target, format="PNG")
    else:
        import tifffile

        dtype = np.uint8 if label_format(labels) == "PNG" else np.uint16
        tifffile.imwrite(target, labels.astype(dtype), compression="zlib")
    return fmt


def write_rgba_png(rgba: np.ndarray, target: str | Path | IO[bytes]) -> None:
    """Write an ``(H, W, 4)`` uint8 image as PNG."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(rgba, dtype=np.uint8)).save(target, format="PNG")


def to_bytes(writer: Any, *args: Any) -> bytes:
    """Run ``writer(*args, buffer)`` and return what it wrote."""
    buf = io.BytesIO()
    writer(*args, buf)
    return buf.getvalue()
