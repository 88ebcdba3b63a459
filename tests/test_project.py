"""Project files: round trip, atomic writes, second writers, changed images, unsafe paths,
limits; training across a project's images."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import segdash
from segdash import project as project_mod
from segdash.errors import ProjectConflictError, ProjectError
from segdash.project import PaintedRows, Project, train_project
from segdash.strokes import Stroke

from .conftest import scribbles, two_texture_image


def _folder(tmp_path: Path, n: int = 2) -> list[Path]:
    paths = []
    for i in range(n):
        img, _ = two_texture_image(64, seed=i)
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def _strokes(label_a: int = 1, label_b: int = 2) -> list[Stroke]:
    return [Stroke((4, 60), (6, 6), label_a, 3), Stroke((26, 38), (32, 32), label_b, 3)]


def test_project_round_trips_images_strokes_classes_and_settings(tmp_path):
    paths = _folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    p = Project.open(pfile, paths)
    assert [i.path for i in p.images] == ["img0.png", "img1.png"]
    assert p.images[0].shape == (64, 64, 1) and p.images[0].frames == 1
    p.set_strokes(1, 0, _strokes())
    p.classes = [segdash.ClassInfo(1, "back", "#112233"), segdash.ClassInfo(2, "disc", "#445566")]
    p.feature_params = {"basic": {"sigma_max": 4.0}}
    p.classifier_params = {"n_estimators": 20}
    p.save()
    q = Project.load(pfile)
    assert q.revision == p.revision >= 2
    assert q.strokes(1, 0) == _strokes() and q.strokes(0, 0) == []
    assert [c.name for c in q.classes] == ["back", "disc"]
    assert q.feature_params == {"basic": {"sigma_max": 4.0}}
    assert q.classifier_params == {"n_estimators": 20}
    assert q.images[0].fingerprint == project_mod.fingerprint(paths[0])
    assert all(img.problem == "" for img in q.images)
    # opening again with the same files adds nothing
    assert len(Project.open(pfile, paths).images) == 2


def test_write_interrupted_by_killing_the_writer_leaves_the_previous_file(tmp_path):
    paths = _folder(tmp_path, 1)
    pfile = tmp_path / "segdash-project.json"
    p = Project.open(pfile, paths)
    p.set_strokes(0, 0, _strokes())
    before = pfile.read_bytes()
    # A writer that stops for good after writing its temporary file but before the rename
    # (inside fsync): killed there, as a crash or a power cut would.
    child = textwrap.dedent(f"""
        import os, sys, time
        from segdash.project import Project
        from segdash.strokes import Stroke
        p = Project.load({str(pfile)!r})
        p.set_strokes(0, 0, [Stroke(tuple(range(60)), tuple(range(60)), 2, 3)] * 2000,
                      save=False)
        def hang(fd):
            sys.stdout.write("written\\n"); sys.stdout.flush(); time.sleep(60)
        os.fsync = hang
        p.save()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
        tmp_files = list(tmp_path.glob(".segdash-project.json.*.tmp"))
        assert tmp_files and tmp_files[0].stat().st_size > len(before)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pfile.read_bytes() == before
    q = Project.load(pfile)
    assert q.strokes(0, 0) == _strokes()
    # the next save of a live session still works (the stale temporary file is harmless)
    p.set_strokes(0, 0, _strokes(2, 1))
    assert Project.load(pfile).strokes(0, 0) == _strokes(2, 1)


def test_writer_killed_at_random_moments_never_leaves_a_broken_file(tmp_path):
    paths = _folder(tmp_path, 1)
    pfile = tmp_path / "segdash-project.json"
    Project.open(pfile, paths)
    child = textwrap.dedent(f"""
        from segdash.project import Project
        from segdash.strokes import Stroke
        p = Project.load({str(pfile)!r})
        k = 0
        while True:
            k += 1
            p.set_strokes(0, 0, [Stroke(tuple(range(50)), tuple(range(50)), 1 + k % 2, 3)]
                          * (500 + k % 7))
    """)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", child])
        time.sleep(1.5 + rng.random())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        Project.load(pfile)  # always a whole project file


def test_second_writer_is_told_and_overwrites_nothing(tmp_path):
    paths = _folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    Project.open(pfile, paths)
    a, b = Project.load(pfile), Project.load(pfile)
    a.set_strokes(0, 0, _strokes())
    with pytest.raises(ProjectConflictError, match="another session"):
        b.set_strokes(1, 0, _strokes(2, 1))
    on_disk = Project.load(pfile)
    assert on_disk.strokes(0, 0) == _strokes() and on_disk.strokes(1, 0) == []
    # the second writer can take the first one's work and carry on
    c = b.reload()
    c.set_strokes(1, 0, _strokes(2, 1))
    on_disk = Project.load(pfile)
    assert on_disk.strokes(0, 0) == _strokes() and on_disk.strokes(1, 0) == _strokes(2, 1)
    with pytest.raises(ProjectConflictError):
        a.save()


def test_changed_image_is_reported_instead_of_misplacing_strokes(tmp_path):
    paths = _folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    p = Project.open(pfile, paths)
    p.set_strokes(0, 0, _strokes())
    p.set_strokes(1, 0, _strokes())
    Image.fromarray(np.fliplr(np.asarray(Image.open(paths[0])))).save(paths[0])
    q = Project.load(pfile)
    assert "img0.png changed on disk" in q.images[0].problem
    assert "2 stroke(s)" in q.images[0].problem
    assert q.images[1].problem == ""
    assert q.strokes(0, 0) == _strokes()  # kept, not dropped
    with pytest.raises(ProjectError, match="changed on disk"):
        q.read(0)
    with pytest.raises(ProjectError, match="changed on disk"):
        train_project(q)
    paths[1].unlink()
    assert "cannot read the image" in Project.load(pfile).images[1].problem


def _doc(tmp_path: Path, **changes) -> Path:
    tmp_path.mkdir(exist_ok=True)
    paths = _folder(tmp_path, 1)
    pfile = tmp_path / "segdash-project.json"
    Project.open(pfile, paths)
    doc = json.loads(pfile.read_text())
    for key, value in changes.items():
        if key == "path":
            doc["images"][0]["path"] = value
        else:
            doc[key] = value
    pfile.write_text(json.dumps(doc))
    return pfile


@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd", "sub/../../x.png", "."])
def test_project_naming_a_path_outside_its_folder_is_refused(tmp_path, path):
    pfile = _doc(tmp_path / "proj", path=path)
    with pytest.raises(ProjectError, match="outside the project's folder"):
        Project.load(pfile)


def test_link_leading_outside_the_folder_is_refused(tmp_path):
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside)
    folder = tmp_path / "proj"
    pfile = _doc(folder, path="link.png")
    (folder / "link.png").symlink_to(outside)
    with pytest.raises(ProjectError, match="outside the project's folder"):
        Project.load(pfile)
    p = Project(folder / "other.json")
    with pytest.raises(ProjectError, match="outside"):
        p.add_image(folder / "link.png")
    with pytest.raises(ProjectError, match="outside"):
        p.add_image(outside)


def test_huge_project_file_is_refused_before_reading(tmp_path):
    pfile = tmp_path / "segdash-project.json"
    with open(pfile, "wb") as fh:
        fh.truncate(project_mod.MAX_PROJECT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ProjectError, match="exceeds the limit"):
        Project.load(pfile)


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b'{"format": "segdash-annotations"}', "not a segdash project"),
    (b'{"format": "segdash-project", "version": 99}', "upgrade segdash"),
    (b'{"format": "segdash-project", "version": 1, "images": 3}', "images: not a list"),
    (b'{"format": "segdash-project", "version": 1, "images": [{"path": "a.png"}]}',
     "fingerprint"),
    (b'{"format": "segdash-project", "version": 1, "classes": [{"id": 0}]}', "classes"),
    (b'{"format": "segdash-project", "version": 1, "features": {"names": []}}', "features"),
    (b'\xff\xfe\x00', "not valid JSON"),
])
def test_malformed_project_file_is_refused_with_a_clear_message(tmp_path, content, message):
    pfile = tmp_path / "segdash-project.json"
    pfile.write_bytes(content)
    with pytest.raises(ProjectError, match=message):
        Project.load(pfile)


def test_malformed_stroke_and_too_many_points_are_refused(tmp_path):
    pfile = _doc(tmp_path)
    doc = json.loads(pfile.read_text())
    doc["images"][0]["strokes"] = {"0": [{"x": [1, 2], "y": [1], "label": 1}]}
    pfile.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match="stroke 0 of frame 0 is malformed"):
        Project.load(pfile)
    doc["images"][0]["strokes"] = {"5": []}
    pfile.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match="no such frame"):
        Project.load(pfile)
    n = project_mod.MAX_POINTS // 2 + 1
    doc["images"][0]["strokes"] = {"0": [{"x": [1] * n, "y": [1] * n, "label": 1}] * 2}
    pfile.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match="stroke points exceed the limit"):
        Project.load(pfile)


def test_read_only_folder_saves_to_the_fallback_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    folder = tmp_path / "images"
    folder.mkdir()
    paths = _folder(folder)
    real = project_mod.write_atomic

    def refuse_in_folder(path, data):
        # the tests run as root, for whom chmod does not make a folder read-only
        if Path(path).parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real(path, data)

    monkeypatch.setattr(project_mod, "write_atomic", refuse_in_folder)
    p = Project.open(folder / "segdash-project.json", paths)
    assert p.file == project_mod.fallback_file(folder)
    assert "is read-only" in p.notice and str(p.file) in p.notice
    p.set_strokes(0, 0, _strokes())
    # the next session on the folder finds it there
    q = Project.open(folder / "segdash-project.json", paths)
    assert q.file == p.file and q.strokes(0, 0) == _strokes() and "read-only" in q.notice
    assert [i.path for i in q.images] == ["img0.png", "img1.png"]


def test_uploads_are_stored_beside_the_project_and_non_images_refused(tmp_path):
    p = Project(tmp_path / "segdash-project.json")
    img, _ = two_texture_image(32)
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    entry = p.add_upload(buf.getvalue(), "../../my scan.png")
    assert entry.path.startswith(project_mod.UPLOADS + "/") and entry.path.endswith("my_scan.png")
    assert (tmp_path / entry.path).read_bytes() == buf.getvalue()
    assert np.array_equal(p.read(entry), img)
    with pytest.raises(segdash.ImageError, match="notes.txt"):
        p.add_upload(b"hello", "notes.txt")
    assert len(p.images) == 1


def test_stack_is_one_image_with_strokes_per_frame(tmp_path):
    frames = np.stack([two_texture_image(48, seed=s)[0] for s in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack",
                     metadata={"axes": "ZYX"})
    p = Project.open(tmp_path / "segdash-project.json", [tmp_path / "stack.tif"])
    img = p.images[0]
    assert img.frames == 3 and img.shape == (48, 48, 1)
    assert np.array_equal(p.read(0, 2), frames[2])
    p.set_strokes(0, 2, _strokes())
    q = Project.load(p.file)
    assert q.strokes(0, 2) == _strokes() and q.strokes(0, 0) == []
    assert q.painted() == [(0, 2)]
    with pytest.raises(segdash.ImageError, match="no frame 3"):
        q.read(0, 3)


def test_images_of_another_channel_count_are_refused(tmp_path):
    paths = _folder(tmp_path, 1)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    p = Project.open(tmp_path / "p.json", paths)
    with pytest.raises(ProjectError, match="one project holds images of one kind"):
        p.add_image(rgb)


def test_project_training_equals_fit_on_the_list_of_its_images(tmp_path):
    paths = _folder(tmp_path, 3)
    p = Project.open(tmp_path / "segdash-project.json", paths)
    lab = scribbles(64)
    strokes = _strokes()
    p.set_strokes(0, 0, strokes)
    p.set_strokes(2, 0, strokes)
    p.feature_params = {"basic": {"sigma_max": 4.0}}
    model = train_project(p)
    images = [np.asarray(Image.open(x)) for x in paths]
    labels = [p.labels(0), np.zeros((64, 64), np.uint16), p.labels(2)]
    ref = segdash.fit(images, labels, feature_params={"sigma_max": 4.0})
    for im in images:
        assert np.array_equal(model.predict(im), ref.predict(im))
    # cached rows give the same model, and computing them again is not needed
    rows = PaintedRows()
    m1 = train_project(p, rows)
    calls = []
    stack = p.feature_stack()
    orig = type(stack).codes
    type(stack).codes = lambda self, *a, **k: calls.append(1) or orig(self, *a, **k)
    try:
        m2 = train_project(p, rows, stack=stack)
    finally:
        type(stack).codes = orig
    assert calls == []
    assert np.array_equal(m1.predict(images[1]), m2.predict(images[1]))
    del lab


def test_fit_on_two_images_labels_an_unpainted_one_better_than_on_one():
    # image A holds only dark classes, image B the same classes brighter: trained on A
    # alone, B's pixels fall outside what the model has seen
    rng = np.random.default_rng(0)

    def scene(offset, seed):
        r = np.random.default_rng(seed)
        img = r.normal(0, 4, (64, 64)) + 60 + offset
        truth = np.ones((64, 64), np.uint8)
        truth[:, 32:] = 2
        img[:, 32:] += 50
        return np.clip(img, 0, 255).astype(np.uint8), truth

    a, ta = scene(0, 1)
    b, tb = scene(90, 2)
    c, tc = scene(90, 3)
    la = np.zeros_like(ta)
    la[10:14, 4:28] = 1
    la[10:14, 36:60] = 2
    one = segdash.fit(a, la, feature_params={"sigma_max": 2.0})
    two = segdash.fit([a, b], [la, la.copy()], feature_params={"sigma_max": 2.0})
    acc_one = (one.predict(c) == tc).mean()
    acc_two = (two.predict(c) == tc).mean()
    assert acc_two > 0.95 and acc_one < 0.8, (acc_one, acc_two)
    del rng


def test_fit_with_lists_checks_its_arguments():
    img = np.zeros((16, 16), np.uint8)
    lab = np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match="one label image per image"):
        segdash.fit([img, img], [lab])
    with pytest.raises(ValueError, match="label image 1 has shape"):
        segdash.fit([img, img], [lab, lab[:8]])
    with pytest.raises(segdash.ImageError, match="different channel counts"):
        segdash.fit([img, np.zeros((16, 16, 3), np.uint8)], [lab, lab])
    with pytest.raises(ValueError, match="at least two classes"):
        segdash.fit([img, img], [lab, lab])


def test_a_fingerprint_is_hashed_once_per_file_state_and_again_when_the_file_changes(
        tmp_path, monkeypatch):
    import os
    import time

    import segdash.project as pm

    hashed = []
    real_sha, real_now = pm.hashlib.sha256, time.time_ns

    def counting():
        hashed.append(1)
        return real_sha()

    monkeypatch.setattr(pm.hashlib, "sha256", counting)
    fresh = tmp_path / "b.bin"  # changed just now: hashed every time (racy timestamps)
    fresh.write_bytes(b"z")
    pm.fingerprint(fresh)
    pm.fingerprint(fresh)
    assert len(hashed) == 2
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    later = [real_now() + 10 * 10**9]  # seconds after the writes: the file is remembered
    monkeypatch.setattr(pm.time, "time_ns", lambda: later[0])
    first = pm.fingerprint(f)
    assert pm.fingerprint(f) == first and len(hashed) == 3
    st = f.stat()
    f.write_bytes(b"y" * 1000)  # same size, new content,
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # even the old modification time
    later[0] = real_now() + 10 * 10**9
    assert pm.fingerprint(f) != first and len(hashed) == 4  # the status change time moved
    assert pm.fingerprint(f) == pm.fingerprint(f) and len(hashed) == 4
