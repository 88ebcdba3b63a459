"""Lazy image sources for ``segdash apply``: the files named by a command line, and their
planes as Dask arrays.

PNG and JPEG are read whole with :func:`segdash.io.read.read_image` (the dashboard's
reader, so a model sees the same values in both places). TIFF files are read lazily, region
by region, where the tiles are computed: through a memory map when the pixels are stored
uncompressed and contiguous, else through tifffile's zarr store (which decodes only the TIFF
tiles or strips a region touches). Every page or frame of a TIFF stack or time series is a
plane of its own (:class:`~segdash.io.read.TiffLayout`).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from .naming import is_image_name
from .read import TiffLayout, TiffPlane, read_image, sniff_format

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
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_name(p))
            if not found:
                errors.append((item, "folder holds no PNG, JPEG or TIFF file"))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(item):
            found = sorted(p for p in _glob(item) if p.is_file() and is_image_name(p))
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


def _glob(pattern: str) -> list[Path]:
    """Paths matching ``pattern``; ``**`` recurses into folders but not through symbolic
    links to folders, so a link loop (``a/loop -> a``) is not followed for ever.

    ``glob.glob(recursive=True)`` follows such links (a loop expanded for minutes into
    gigabytes); :meth:`pathlib.Path.glob` does not, from the pattern's fixed leading part.
    """
    if "**" not in pattern:
        return [Path(p) for p in glob.glob(pattern)]
    parts = Path(pattern).parts
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    root = Path(*parts[:fixed]) if fixed else Path(".")
    rest = str(Path(*parts[fixed:], *(["*"] if parts[-1] == "**" else [])))
    try:
        return list(root.glob(rest))
    except (OSError, ValueError):
        return []


# -- lazy TIFF planes ----------------------------------------------------------------------

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
    layout : TiffLayout or None
        The axes of a TIFF (read lazily); None for PNG and JPEG (read whole).
    stamp : tuple of int
        Modification time (ns) and size of a TIFF when opened (a rewritten file is reopened).
    """

    path: Path
    frames: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    is_stack: bool
    layout: TiffLayout | None = None
    stamp: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_lazy(self) -> bool:
        """Read region by region where the tiles are computed (TIFF), not here."""
        return self.layout is not None

    def plane(self, index: int, chunks: tuple, downsample: int = 1) -> Any:
        """Plane ``index`` as a dask array of ``chunks`` (``(rows, cols, (C,))``).

        With ``downsample`` d > 1: the plane at that working resolution,
        ``(ceil(H / d), ceil(W / d), C)``, as the dashboard sees it
        (:meth:`segdash.io.pyramid.Pyramid.at`: the file's own level of that size, else
        the area average of full resolution)."""
        import dask.array as da
        from dask.base import tokenize

        if downsample > 1:
            from .pyramid import AveragedPlane, open_pyramid, pyramid_of

            if self.layout is None:
                arr = read_image(self.path)
                level = pyramid_of(arr, self.name).at(downsample)
            elif index == 0:
                level = open_pyramid(self.path).at(downsample)
            else:
                frame = self.layout.frame_index(index)
                level = AveragedPlane(TiffPlane(str(self.path.resolve()), 0, self.layout,
                                                frame, self.dtype, self.stamp), downsample)
            name = "segdash-read-" + tokenize(str(self.path), self.stamp, index, downsample,
                                              chunks)
            return da.from_array(level, chunks=chunks, name=name, lock=False, asarray=True,
                                 fancy=False, meta=np.empty((0, 0, 0), self.dtype))
        if self.layout is None:
            # PNG/JPEG: read again now (planning read it only to check it), so that only
            # the images being tiled are in memory, not a whole folder's.
            arr = read_image(self.path)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.shape != self.shape or arr.dtype != self.dtype:
                raise ImageError(f"{self.name}: the file changed while being processed")
            return da.from_array(arr, chunks=chunks)
        frame = self.layout.frame_index(index)
        path = str(self.path.resolve())
        # tiles read their neighbours' regions again as halos: keep the decoded ones
        plane = TiffPlane(path, 0, self.layout, frame, self.dtype, self.stamp,
                          cache_regions=True)
        name = "segdash-read-" + tokenize(path, self.stamp, frame, chunks)
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
    if not head:
        raise ImageError(f"{path.name}: the file is empty (0 bytes)")
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
            axes, shape, dtype = series.axes, series.shape, np.dtype(series.dtype)
    except Exception as exc:
        raise ImageError(f"{path.name}: cannot decode this TIFF file ({exc})") from exc
    layout = TiffLayout.of(axes, shape, path.name)
    if dtype.kind not in "uifb":
        raise ImageError(f"{path.name}: TIFF of dtype {dtype} is not supported")
    stat = path.stat()
    return ImageSource(path, layout.frames, (layout.height, layout.width, layout.channels),
                       dtype.newbyteorder("="), layout.is_stack, layout=layout,
                       stamp=(stat.st_mtime_ns, stat.st_size))
