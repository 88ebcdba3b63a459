import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from segdash.errors import ImageError
from segdash.io.read import read_image
from segdash.io.write import write_labels


def _png(arr, mode=None):
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(
        buf, format="PNG")
    return buf.getvalue()


def test_reads_grey_rgb_and_drops_alpha():
    rgb = np.random.default_rng(0).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    assert read_image(_png(rgb)).shape == (10, 12, 3)
    assert read_image(_png(rgb[:, :, 0])).shape == (10, 12)
    rgba = np.dstack([rgb, np.full((10, 12), 200, np.uint8)])
    out = read_image(_png(rgba))
    assert out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, rgb)


def test_reads_16_bit_png_as_uint16():
    arr = (np.arange(120).reshape(10, 12) * 500).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out = read_image(buf.getvalue())
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, arr)


def test_reads_jpeg(tmp_path):
    rgb = np.full((16, 16, 3), 100, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg")
    assert read_image(tmp_path / "x.jpg").shape == (16, 16, 3)


def test_reads_tiff_float_and_channels(tmp_path):
    arr = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "c.tif", arr, photometric="minisblack", metadata={"axes": "CYX"})
    out = read_image(tmp_path / "c.tif")
    assert out.shape == (20, 30, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :, 1], arr[1])


def test_multipage_tiff_gives_first_plane(tmp_path):
    stack = np.stack([np.full((8, 9), i, np.uint16) for i in range(4)])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    out = read_image(tmp_path / "s.tif")
    assert out.shape == (8, 9) and out.max() == 0


def test_format_is_recognised_by_content_not_name(tmp_path):
    (tmp_path / "fake.png").write_bytes(b"<html>not an image</html>")
    with pytest.raises(ImageError, match="fake.png: not a PNG, JPEG or TIFF"):
        read_image(tmp_path / "fake.png")


def test_truncated_png_is_an_image_error():
    data = _png(np.zeros((50, 50), np.uint8))
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(data[: len(data) // 2])


def test_pixel_limit_is_checked_before_decoding():
    data = _png(np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(data, max_pixels=5000)


def test_label_images_are_png_for_uint8_ids_else_16_bit_tiff(tmp_path):
    # By dtype, not by the values present: a model whose ids exceed 255 writes TIFF for
    # every image (batch writes bands before it has seen all values), so names never vary.
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    assert write_labels(labels, tmp_path / "a.png") == "PNG"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), labels)
    small16 = labels.astype(np.uint16)
    assert write_labels(small16, tmp_path / "c.tif") == "TIFF"
    assert tifffile.imread(tmp_path / "c.tif").dtype == np.uint16
    big = small16.copy()
    big[0, 0] = 300
    assert write_labels(big, tmp_path / "b.tif") == "TIFF"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), big)


def test_decoding_errors_do_not_show_python_object_reprs():
    data = _png(np.zeros((50, 50), np.uint8))
    broken = data[:8] + b"\x00" * 40
    with pytest.raises(ImageError) as info:
        read_image(broken)
    assert "BytesIO" not in str(info.value) and "0x" not in str(info.value)
    assert str(info.value).startswith("upload: cannot decode this PNG file")


# -- untrusted files: decoded in a sandboxed child, pixels mapped from a .npy ----------


def test_an_untrusted_file_is_decoded_outside_and_mapped_read_only(tmp_path):
    from segdash.io.read import read_untrusted

    rgb = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    src = tmp_path / "upload.part"
    src.write_bytes(_png(rgb))
    arr = read_untrusted(src, tmp_path / "pixels.npy", "scan.png")
    np.testing.assert_array_equal(arr, rgb)
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    stack = np.stack([np.full((20, 30), i, np.uint16) for i in range(3)])
    tifffile.imwrite(src, stack, photometric="minisblack")  # a stack, read in place
    assert read_untrusted(src, tmp_path / "t.npy", "s.tif").tolist() == stack[0].tolist()


def test_an_untrusted_file_that_is_not_an_image_is_refused_under_its_users_name(tmp_path):
    from segdash.io.read import read_untrusted

    src = tmp_path / "tmp123.part"
    src.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ImageError, match=r"^notes\.png: not a PNG, JPEG or TIFF"):
        read_untrusted(src, tmp_path / "x.npy", "notes.png")
    assert not (tmp_path / "x.npy").exists()


def test_a_decompression_bomb_exhausts_only_the_decoders_memory(tmp_path):
    import zlib

    from segdash.io.read import read_untrusted

    # 8000x8000 RGB (192 MB decoded, 256 MB as Pillow holds it) in a 0.2 MB file
    rows = zlib.compress(bytes(1 + 3 * 8000) * 8000, 9)
    src = tmp_path / "bomb.part"
    src.write_bytes(_png_header(8000, 8000) + _png_chunk(b"IDAT", rows)
                    + _png_chunk(b"IEND", b""))
    assert src.stat().st_size < 500_000
    with pytest.raises(ImageError, match=r"^bomb\.png: decoding needs more memory than the "
                                         r"limit of 0\.1 GB"):
        read_untrusted(src, tmp_path / "x.npy", "bomb.png", memory_bytes=100_000_000)


def test_a_decoder_running_past_its_time_is_stopped(tmp_path):
    from segdash.io.read import read_untrusted

    noise = (np.random.default_rng(0).random((3000, 3000, 3)) * 255).astype(np.uint8)
    src = tmp_path / "slow.part"
    src.write_bytes(_png(noise))
    with pytest.raises(ImageError, match=r"^slow\.png: the image decoder took longer than "
                                         r"0\.05 s and was stopped"):
        read_untrusted(src, tmp_path / "x.npy", "slow.png", seconds=0.05)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png_header(width: int, height: int) -> bytes:
    import struct

    return b"\x89PNG\r\n\x1a\n" + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
