"""``segdash apply`` never loses or leaves data, and refuses hostile model files up front."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from PIL import Image

import segdash
from segdash.cli import main
from segdash.io.read import MAX_IMAGE_PIXELS, read_image
from segdash.io.sources import expand_inputs

from .conftest import scribbles, two_texture_image


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("safety")
    img, _ = two_texture_image(64)
    model = segdash.fit(img, scribbles(64), feature_params={"sigma_min": 1, "sigma_max": 2},
                        classifier_params={"n_estimators": 3, "max_depth": 5})
    model.save(root / "model.skops")
    return root / "model.skops"


def _image(folder: Path, name: str, seed: int = 1) -> Path:
    img, _ = two_texture_image(48, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / name)
    return folder / name


def _apply(model: Path, *args: str) -> int:
    return main(["apply", str(model), *args, "--quiet"])


# -- hostile model files --------------------------------------------------------------------

def _hostile_model(model_path: Path, tmp_path: Path, edit) -> Path:
    model = segdash.load_model(model_path)
    doc = model.document()
    doc["estimator"] = est = copy.deepcopy(model.estimator)
    edit(est.estimators_[0].tree_)
    path = tmp_path / "hostile.skops"
    path.write_bytes(sio.dumps(doc))
    return path


def _feature_out_of_range(tree) -> None:
    tree.feature[int(np.flatnonzero(tree.children_left >= 0)[-1])] = 10**6


def _child_to_root(tree) -> None:
    tree.children_left[int(np.flatnonzero(tree.children_left >= 0)[-1])] = 0


@pytest.mark.parametrize("edit", [_feature_out_of_range, _child_to_root])
def test_apply_refuses_a_hostile_model_before_any_tile_with_the_real_cause(
        model_path, tmp_path, capsys, edit):
    hostile = _hostile_model(model_path, tmp_path, edit)
    _image(tmp_path / "in", "a.png")
    status = _apply(hostile, str(tmp_path / "in"), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot use the model" in err and "trees are unsafe to use" in err
    assert "cancelled" not in err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


# -- inputs are never outputs ---------------------------------------------------------------

def test_an_input_named_like_an_output_is_never_overwritten(model_path, tmp_path, capsys):
    folder = tmp_path / "in"
    _image(folder, "x.png", seed=1)
    precious = _image(folder, "x_labels.png", seed=2)  # the user's own file
    before = precious.read_bytes()
    status = _apply(model_path, str(folder), "--out", str(folder), "--overwrite")
    out = capsys.readouterr().out
    assert precious.read_bytes() == before
    assert status == 1
    assert "x_labels.png is also an input of this run and is never overwritten" in out
    assert (folder / "x_labels_labels.png").exists()  # the other input is processed


# -- globs ---------------------------------------------------------------------------------

def test_recursive_glob_does_not_follow_a_symlink_loop(tmp_path):
    _image(tmp_path / "scans" / "day1", "a.png")
    _image(tmp_path / "scans" / "day2", "b.png")
    # two links back up: following them, the paths double with each level (2**40 before
    # the system's symlink limit stops it)
    os.symlink(tmp_path / "scans", tmp_path / "scans" / "day1" / "loop")
    os.symlink(tmp_path / "scans", tmp_path / "scans" / "day2" / "again")
    # a child process, so a regression cannot hang the test run
    code = ("import sys; from segdash.io.sources import expand_inputs; "
            "print([str(p) for p in expand_inputs([sys.argv[1]])[0]])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "scans/**/*.png")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = eval(result.stdout)  # a list of str printed by the child
    assert sorted(Path(p).name for p in found) == ["a.png", "b.png"]


def test_recursive_glob_still_finds_nested_files(tmp_path):
    _image(tmp_path / "a" / "b" / "c", "deep.png")
    _image(tmp_path, "top.png")
    files, errors = expand_inputs([str(tmp_path / "**" / "*.png")])
    assert sorted(p.name for p in files) == ["deep.png", "top.png"] and not errors
    files, _ = expand_inputs([str(tmp_path / "a" / "**")])
    assert [p.name for p in files] == ["deep.png"]


# -- the output folder ---------------------------------------------------------------------

@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: make it immutable
        if not shutil.which("chattr") or subprocess.run(
                ["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root where no folder can be made read-only (no chattr)")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_a_read_only_output_folder_stops_the_batch_up_front(model_path, tmp_path, capsys,
                                                           read_only_folder):
    _image(tmp_path / "in", "a.png")
    _image(tmp_path / "in", "b.png", seed=3)
    status = _apply(model_path, str(tmp_path / "in"), "--out", str(read_only_folder))
    captured = capsys.readouterr()
    assert status == 2
    assert f"cannot write into the output folder {read_only_folder}" in captured.err
    assert "failed:" not in captured.out + captured.err  # not one failure per image


# -- interrupted runs ----------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_removed_and_reported(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    dead = _dead_pid()
    stale = out / f".a_labels.png.{dead}.part"
    stale.write_bytes(b"half a png")
    alive = out / f".b_labels.png.{os.getppid()}.part"  # a running process's: kept
    alive.write_bytes(b"being written")
    mine = out / ".notes.txt.123.part"  # not segdash's pattern: kept
    mine.write_bytes(b"user data")
    _image(tmp_path / "in", "a.png")
    status = _apply(model_path, str(tmp_path / "in"), "--out", str(out))
    err = capsys.readouterr().err
    assert status == 0
    assert not stale.exists() and alive.exists() and mine.exists()
    assert f"removed 1 unfinished file(s) of an interrupted run: {stale.name}" in err
    assert (out / "a_labels.png").exists()


def test_rerun_resumes_skipping_finished_outputs_and_writing_missing_ones(
        model_path, tmp_path, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    _image(inp, "a.png")
    _image(inp, "b.png", seed=2)
    assert _apply(model_path, str(inp), "--out", str(out)) == 0
    finished = (out / "a_labels.png").read_bytes()
    os.utime(out / "a_labels.png", (1, 1))
    (out / "b_labels.png").unlink()  # as if killed before b was renamed into place
    capsys.readouterr()
    assert _apply(model_path, str(inp), "--out", str(out), "--proba") == 0
    text = capsys.readouterr().out
    assert "2 image(s) segmented" in text and "0 skipped" in text
    assert "kept: " in text and "a_labels.png (from an earlier run" in text
    assert (out / "a_labels.png").read_bytes() == finished
    assert os.stat(out / "a_labels.png").st_mtime == 1  # not rewritten
    assert {"b_labels.png", "a_proba.tif", "b_proba.tif"} <= set(os.listdir(out))
    capsys.readouterr()
    assert _apply(model_path, str(inp), "--out", str(out), "--proba") == 0
    assert "0 image(s) segmented" in capsys.readouterr().out


# -- image limits ---------------------------------------------------------------------------

def test_png_of_10000_squared_pixels_is_read_as_documented(tmp_path):
    # docs/batch.md: PNG and JPEG up to 16384 x 16384 pixels (Pillow alone stops at 89.5 M)
    assert MAX_IMAGE_PIXELS == 16384 * 16384
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((10000, 10000), np.uint8)).save(path)
    assert read_image(path).shape == (10000, 10000)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_png_over_the_limit_is_refused_from_its_header(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(16385, 16384))
    with pytest.raises(segdash.ImageError, match="huge.png: image of 16385x16384 pixels "
                                                 "exceeds the limit|decompression bomb"):
        read_image(path)


def test_empty_files_are_named_as_empty(model_path, tmp_path, capsys):
    with pytest.raises(segdash.ImageError, match=r"upload: the file is empty \(0 bytes\)"):
        read_image(b"")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "zero.png").write_bytes(b"")
    _image(tmp_path / "in", "a.png")
    assert _apply(model_path, str(tmp_path / "in"), "--out", str(tmp_path / "out")) == 1
    assert "zero.png: the file is empty (0 bytes)" in capsys.readouterr().out
