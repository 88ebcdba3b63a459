"""``segdash apply`` end to end: real files on disk, the local scheduler and a real
dask.distributed LocalCluster with two worker processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import segdash
from segdash.cli import main
from segdash.tiling import min_tile, tile_chunks

from .conftest import scribbles, two_texture_image

distributed = pytest.importorskip("distributed")


def _picture(seed: int, reps: tuple[int, int], trim: tuple[int, int]) -> np.ndarray:
    img, _ = two_texture_image(96, seed=seed)
    big = np.tile(img, reps)
    return big[:big.shape[0] - trim[0], :big.shape[1] - trim[1]]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """A model and a folder of inputs: PNG, tiled and plain TIFF, a stack, bad files."""
    root = tmp_path_factory.mktemp("batch")
    img, _ = two_texture_image(128)
    model = segdash.fit(img, scribbles(128), feature_params={"sigma_min": 1, "sigma_max": 4},
                        classifier_params={"n_estimators": 10})
    model.save(root / "model.skops")
    inp = root / "in"
    inp.mkdir()
    images = {
        "plain": _picture(1, (2, 2), (5, 9)),     # 187 x 183 PNG
        "tiled": _picture(2, (2, 3), (0, 17)),    # 192 x 271 tiled, compressed TIFF
        "strips": _picture(3, (1, 2), (3, 0)),    # 93 x 192 uncompressed TIFF
        "stack": np.stack([_picture(s, (2, 2), (10, 4)) for s in (4, 5, 6)]),
    }
    Image.fromarray(images["plain"]).save(inp / "plain.png")
    tifffile.imwrite(inp / "tiled.tif", images["tiled"], tile=(32, 48), compression="zlib")
    tifffile.imwrite(inp / "strips.tif", images["strips"])
    tifffile.imwrite(inp / "stack.tif", images["stack"], photometric="minisblack")
    bad = root / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    Image.fromarray(np.dstack([images["plain"]] * 3)).save(bad / "colour.png")
    return {"root": root, "model": root / "model.skops", "inp": inp, "bad": bad,
            "images": images, "loaded": segdash.load_model(root / "model.skops"),
            # several tiles per image: the smallest tile the model allows, at least 64
            "tile": max(64, min_tile(model))}


@pytest.fixture(scope="module")
def cluster():
    """One real LocalCluster with two worker processes for the whole module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=40) as lc:
        with distributed.Client(lc) as client:
            client.wait_for_workers(2)
            pids = client.run(os.getpid)
            assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        yield lc.scheduler_address


def _apply(data: dict, out: Path, *extra: str, inputs: list | None = None) -> int:
    args = ["apply", str(data["model"]), *(inputs or [str(data["inp"])]), "--out", str(out),
            "--tile", str(data["tile"]), *extra]
    return main(args)


def _outputs(out: Path) -> dict[str, np.ndarray]:
    result = {}
    for f in sorted(out.iterdir()):
        if f.suffix == ".png":
            with Image.open(f) as im:
                result[f.name] = np.asarray(im)
        else:
            result[f.name] = tifffile.imread(f)
    return result


def _check_against_whole_image_prediction(data: dict, got: dict[str, np.ndarray]) -> None:
    model, im = data["loaded"], data["images"]
    for name in ("plain", "tiled", "strips"):
        labels = got[f"{name}_labels.png"]
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, model.predict(im[name]), err_msg=name)
        np.testing.assert_array_equal(got[f"{name}_proba.tif"], model.predict_proba(im[name]))
    stack = got["stack_labels.tif"]
    assert stack.shape == im["stack"].shape  # a stack stays a stack, every page segmented
    for page, labels in zip(im["stack"], stack, strict=True):
        np.testing.assert_array_equal(labels, model.predict(page))
    assert got["stack_proba.tif"].shape == (*im["stack"].shape, 2)
    assert got["stack_proba.tif"].dtype == np.float32
    assert set(np.unique(stack)) == {1, 2}


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("out_local")
    status = _apply(data, out, "--proba", "--overlay", "--workers", "2")
    return status, out, _outputs(out)


def test_local_scheduler_segments_folder_tiffs_and_stack_like_whole_images(data, local_run):
    status, out, got = local_run
    assert status == 0
    assert sorted(got) == sorted(
        [f"{n}_{k}" for n in ("plain", "tiled", "strips")
         for k in ("labels.png", "proba.tif", "overlay.png")]
        + ["stack_labels.tif", "stack_overlay.tif", "stack_proba.tif"])
    _check_against_whole_image_prediction(data, got)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary files left


def test_overlays_are_class_colours_blended_over_the_image(data, local_run):
    _, _, got = local_run
    overlay, labels = got["plain_overlay.png"], got["plain_labels.png"]
    image = data["images"]["plain"].astype(np.float32)
    assert overlay.shape == (*labels.shape, 3) and overlay.dtype == np.uint8
    colour = {c.id: np.array(segdash.classes.hex_to_rgb(c.color)) for c in data["loaded"].classes}
    for cls in (1, 2):
        y, x = np.argwhere(labels == cls)[0]
        expected = 0.5 * image[y, x] + 0.5 * colour[cls]
        np.testing.assert_allclose(overlay[y, x], expected, atol=1)
    assert got["stack_overlay.tif"].shape == (*data["images"]["stack"].shape, 3)


def test_overlay_of_a_16_bit_image_equals_the_dashboard_download(data, tmp_path):
    # One display rule: the same model and image give the same overlay file in the
    # dashboard (Segmenter.result_file) and in `segdash apply --overlay`, also for 16-bit
    # images that are stretched (whole-plane range, not per tile) before colouring.
    grey = data["images"]["tiled"]
    img16 = (grey.astype(np.uint16) * 37 + 1000).astype(np.uint16)
    inp = tmp_path / "in"
    inp.mkdir()
    tifffile.imwrite(inp / "deep.tif", img16, tile=(32, 48), compression="zlib")
    status = _apply(data, tmp_path / "out", "--overlay", inputs=[str(inp / "deep.tif")])
    assert status == 0
    with Image.open(tmp_path / "out" / "deep_overlay.png") as im:
        batch = np.asarray(im)
    seg = segdash.Segmenter(live_update=False)
    seg.set_image(segdash.read_image(inp / "deep.tif"), "deep.tif")
    seg.apply_model(data["loaded"])
    name, content = seg.result_file("overlay")
    assert name == "deep_overlay.png"
    with Image.open(io.BytesIO(content)) as im:
        dashboard = np.asarray(im)
    np.testing.assert_array_equal(batch, dashboard)
    # the stretch is real: a 16-bit image scaled by its dtype would be nearly black
    assert batch.mean() > 60


def test_local_cluster_with_two_worker_processes_gives_identical_results(data, local_run,
                                                                        cluster, tmp_path):
    _, _, local = local_run
    with distributed.Client(cluster) as client, distributed.get_task_stream(client) as ts:
        status = _apply(data, tmp_path, "--proba", "--overlay", "--scheduler", cluster)
    assert status == 0
    remote = _outputs(tmp_path)
    assert sorted(remote) == sorted(local)
    for name in local:
        np.testing.assert_array_equal(remote[name], local[name], err_msg=name)
    # the tiles really ran in both worker processes
    tile_workers = {t["worker"] for t in ts.data if "segdash-tile" in str(t["key"])}
    assert len(tile_workers) == 2


def test_python_api_on_the_cluster_equals_the_local_result(data, cluster):
    import dask.array as da

    model, image = data["loaded"], data["images"]["tiled"]
    with distributed.Client(cluster):  # becomes Dask's default scheduler
        lazy = segdash.apply(model, da.from_array(image, chunks=100), tile=data["tile"],
                             proba=True)
        assert isinstance(lazy, da.Array)
        got = lazy.compute()
    np.testing.assert_array_equal(got, model.predict_proba(image))


def test_bad_inputs_are_reported_by_name_and_reason_and_the_rest_processed(data, tmp_path,
                                                                           capsys):
    missing = str(data["root"] / "nope.png")
    status = _apply(data, tmp_path, inputs=[str(data["bad"]), str(data["inp"] / "plain.png"),
                                            missing])
    assert status == 1
    out = capsys.readouterr().out
    assert "1 image(s) segmented" in out and "3 failed" in out
    assert "broken.png: cannot decode" in out
    assert "colour.png: this model was trained on images with 1 channel(s); the image has 3" \
        in out
    assert f"{missing}: no such file or folder" in out
    assert sorted(os.listdir(tmp_path)) == ["plain_labels.png"]


def test_a_file_damaged_past_its_header_fails_alone_and_leaves_no_output(data, tmp_path,
                                                                         capsys):
    a = _picture(7, (3, 3), (0, 0))
    damaged = tmp_path / "in" / "damaged.tif"
    damaged.parent.mkdir()
    tifffile.imwrite(damaged, a, tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(damaged) as tif:
        offsets, counts = tif.pages[0].dataoffsets, tif.pages[0].databytecounts
    raw = bytearray(damaged.read_bytes())
    k = len(offsets) * 2 // 3  # garble tiles two thirds down: found while tiling, not before
    raw[offsets[k]:offsets[k] + counts[k]] = b"\xff" * counts[k]
    damaged.write_bytes(bytes(raw))
    out = tmp_path / "out"
    status = _apply(data, out, "--proba",
                    inputs=[str(damaged), str(data["inp"] / "strips.tif")])
    assert status == 1
    text = capsys.readouterr().out
    assert "failed:" in text and "damaged.tif" in text
    assert sorted(os.listdir(out)) == ["strips_labels.png", "strips_proba.tif"]


def test_existing_outputs_are_kept_unless_overwrite_is_given(data, tmp_path, capsys):
    args = [str(data["inp"] / "plain.png")]
    assert _apply(data, tmp_path, inputs=args) == 0
    target = tmp_path / "plain_labels.png"
    target.write_bytes(b"sentinel")
    capsys.readouterr()
    assert _apply(data, tmp_path, inputs=args) == 0
    assert target.read_bytes() == b"sentinel"
    assert "skipped: " in capsys.readouterr().out
    assert _apply(data, tmp_path, "--overwrite", inputs=args) == 0
    with Image.open(target) as im:
        np.testing.assert_array_equal(np.asarray(im),
                                      data["loaded"].predict(data["images"]["plain"]))


def test_class_ids_above_255_are_written_as_16_bit_tiff(data, tmp_path):
    img, _ = two_texture_image(96)
    labels = scribbles(96).astype(np.uint16)
    labels[labels == 2] = 300
    model = segdash.fit(img, labels, feature_params={"sigma_min": 1, "sigma_max": 2},
                        classifier_params={"n_estimators": 5})
    model.save(tmp_path / "m.skops")
    status = main(["apply", str(tmp_path / "m.skops"), str(data["inp"] / "plain.png"),
                   "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 0
    got = tifffile.imread(tmp_path / "out" / "plain_labels.tif")
    assert got.dtype == np.uint16 and set(np.unique(got)) == {1, 300}
    np.testing.assert_array_equal(got, model.predict(data["images"]["plain"]))


def test_ome_tiff_outputs_drop_the_ome_suffix(data, tmp_path):
    tifffile.imwrite(tmp_path / "slide.ome.tif", data["images"]["strips"], ome=True)
    assert _apply(data, tmp_path / "out", "--quiet",
                  inputs=[str(tmp_path / "slide.ome.tif")]) == 0
    assert os.listdir(tmp_path / "out") == ["slide_labels.png"]


def test_same_named_inputs_do_not_overwrite_each_other(data, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(data["images"]["plain"][::-1]).save(other / "plain.png")
    status = _apply(data, tmp_path / "out",
                    inputs=[str(data["inp"] / "plain.png"), str(other / "plain.png")])
    assert status == 1
    assert "would overwrite those of" in capsys.readouterr().out


def test_workers_without_the_models_plugin_stop_the_batch_with_a_clear_message(
        data, cluster, tmp_path, capsys):
    from segdash import registry
    from segdash.features.basic import BasicFeatures

    class LocalOnly(BasicFeatures):
        """Registered in this process only: the workers do not have it."""

    registry.features.register("local_only_for_test", LocalOnly, overwrite=True)
    img, _ = two_texture_image(64)
    model = segdash.fit(img, scribbles(64), features="local_only_for_test",
                        feature_params={"sigma_max": 2}, classifier_params={"n_estimators": 3})
    model.save(tmp_path / "m.skops")
    status = main(["apply", str(tmp_path / "m.skops"), str(data["inp"] / "plain.png"),
                   "--out", str(tmp_path / "out"), "--scheduler", cluster])
    assert status == 2
    err = capsys.readouterr().err
    assert "workers lack what this model needs" in err and "local_only_for_test" in err


def test_unreachable_scheduler_and_bad_model_exit_2(data, tmp_path, capsys):
    (tmp_path / "model.skops").write_bytes(b"\x80\x04junk")
    assert main(["apply", str(tmp_path / "model.skops"), str(data["inp"]), "--out",
                 str(tmp_path / "o")]) == 2
    assert "pickle" in capsys.readouterr().err
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main(["apply", str(data["model"]), str(data["inp"] / "plain.png"), "--out",
                     str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_command_shows_progress_and_a_summary_with_throughput(data, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "segdash.cli", "apply", str(data["model"]),
         str(data["inp"] / "*.tif"), "--out", str(tmp_path), "--tile", str(data["tile"])],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "images: 100%" in proc.stderr and "tiles : 100%" in proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "3 image(s) segmented (5 plane(s)" in summary
    assert "megapixels) in" in summary and "megapixels/s" in summary
    assert sorted(os.listdir(tmp_path)) == ["stack_labels.tif", "strips_labels.png",
                                            "tiled_labels.png"]


def test_finished_tiles_wait_for_their_band_within_a_few_tile_rows(data, tmp_path,
                                                                   monkeypatch):
    from segdash.batch import plan

    tall = np.concatenate([data["images"]["plain"]] * 4)[:, :150]  # 748 x 150
    rows, cols = (len(tile_chunks(n, data["tile"])) for n in tall.shape)
    assert rows >= 5 and cols >= 2
    Image.fromarray(tall).save(tmp_path / "tall.png")
    held = []
    add = plan.Bands.add

    def recording_add(self, kind, i, j, block):
        add(self, kind, i, j, block)
        held.append(len(self.blocks))

    monkeypatch.setattr(plan.Bands, "add", recording_add)
    assert _apply(data, tmp_path / "out", "--workers", "2",
                  inputs=[str(tmp_path / "tall.png")]) == 0
    assert len(held) == rows * cols
    assert max(held) <= 2 * cols  # never more than two rows of tiles in memory
    with Image.open(tmp_path / "out" / "tall_labels.png") as im:
        np.testing.assert_array_equal(np.asarray(im), data["loaded"].predict(tall))
