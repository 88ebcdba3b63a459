"""The pure parts of painting: the edit history, eraser and fill strokes, class clashes, the
file format versions, the status naming classes, and the shortcut table in the docs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segdash import Segmenter
from segdash.classes import ClassInfo, clashes
from segdash.history import EditHistory
from segdash.project import Project
from segdash.segmenter import need_two_classes
from segdash.strokes import Stroke, rasterize_strokes, strokes_from_json, strokes_to_json

ROOT = Path(__file__).resolve().parents[1]


def test_history_restores_whole_states_and_is_bounded():
    h: EditHistory[str] = EditHistory(limit=3)
    assert h.undo("a") is None and not h.can_undo
    for before in "abcd":
        h.record(before)
    assert len(h) == 3  # "a" is forgotten
    assert h.undo("e") == "d" and h.undo("d") == "c"
    assert h.redo("c") == "d" and h.can_redo
    h.record("d")  # a new edit drops the redo states
    assert not h.can_redo and h.redo("x") is None
    h.clear()
    assert not h.can_undo


def test_eraser_strokes_remove_earlier_labels_and_later_strokes_paint_again():
    paint = Stroke((2, 17), (10, 10), 1, width=5)
    erase = Stroke((10, 10), (0, 19), 0, width=3)
    again = Stroke((10, 10), (14, 19), 2, width=1)
    labels = rasterize_strokes([paint, erase, again], (20, 20))
    assert labels[10, 3] == 1 and labels[10, 16] == 1
    assert np.all(labels[0:14, 9:12] == 0)  # erased, also where nothing was painted
    assert labels[16, 10] == 2  # painted after the eraser
    assert erase.erases and not paint.erases


def test_a_fill_stroke_paints_the_polygon_it_encloses():
    square = ((2, 12, 12, 2, 2), (2, 2, 12, 12, 3))
    filled = rasterize_strokes([Stroke(*square, 3, width=1, fill=True)], (16, 16))
    line = rasterize_strokes([Stroke(*square, 3, width=1)], (16, 16))
    assert np.all(filled[3:12, 3:12] == 3) and np.all(line[4:11, 4:11] == 0)
    assert np.count_nonzero(filled) == 121  # 11 x 11, edges included
    # fewer than three distinct points: a line, as without fill
    short = Stroke((1, 5), (1, 1), 1, width=1, fill=True)
    assert np.array_equal(rasterize_strokes([short], (4, 8)),
                          rasterize_strokes([Stroke((1, 5), (1, 1), 1, width=1)], (4, 8)))


def test_clashes_names_shared_names_and_colours():
    classes = [ClassInfo(1, "cell", "#e69f00"), ClassInfo(2, "Cell ", "#56b4e9"),
               ClassInfo(3, "nucleus", "#56b4e9"), ClassInfo(4, "background", "#009e73")]
    assert clashes(classes) == ['classes 1 and 2 are both named "cell"',
                                'classes 2 and 3 are both coloured "#56b4e9"']
    assert clashes(classes[::3]) == []


def test_annotations_version_2_round_trips_eraser_and_fill_and_version_1_still_reads():
    strokes = [Stroke((1, 2), (3, 4), 2, 3.0), Stroke((0, 5, 5), (0, 0, 5), 1, 1.0, True),
               Stroke((1, 1), (1, 2), 0, 7.0)]
    text = strokes_to_json(strokes, image_shape=[8, 8])
    assert json.loads(text)["version"] == 2
    assert strokes_from_json(text)[0] == strokes
    old = ('{"format": "segdash-annotations", "version": 1, "strokes": '
           '[{"x": [1, 2], "y": [3, 4], "label": 2, "width": 3.0}]}')
    assert strokes_from_json(old)[0] == [Stroke((1, 2), (3, 4), 2, 3.0)]
    with pytest.raises(ValueError, match="version 3"):
        strokes_from_json(old.replace('"version": 1', '"version": 3'))


def test_project_files_of_version_1_read_and_version_2_keeps_eraser_and_fill(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    project = Project.open(tmp_path / "p.json", [tmp_path / "a.png"])
    strokes = [Stroke((1, 6), (1, 1), 1), Stroke((1, 6, 6), (2, 2, 6), 2, 1.0, True),
               Stroke((3, 3), (0, 7), 0, 2.0)]
    project.set_strokes(0, 0, strokes)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["version"] == 2
    again = Project.open(tmp_path / "p.json")
    assert again.strokes(0, 0) == strokes
    # a version 1 file (no fill, no eraser) as segdash wrote it before
    for s in doc["images"][0]["strokes"]["0"]:
        del s["fill"]
    doc["version"] = 1
    doc["images"][0]["strokes"]["0"] = doc["images"][0]["strokes"]["0"][:1]
    (tmp_path / "p.json").write_text(json.dumps(doc))
    assert Project.open(tmp_path / "p.json").strokes(0, 0) == strokes[:1]


def test_the_status_names_painted_and_missing_classes():
    classes = [ClassInfo(1, "background", "#e69f00"), ClassInfo(2, "cell", "#56b4e9")]
    assert need_two_classes([2], classes) == (
        'paint at least two classes to train; painted: "cell"; '
        'not painted yet: "background"')
    assert need_two_classes([0], classes).endswith(
        'painted: nothing; not painted yet: "background", "cell"')


def test_training_says_what_it_does_before_the_result(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img)
    seg.extractor("basic").sigma_max = 4
    seen: list[str] = []
    seg.param.watch(lambda e: seen.append(e.new), "status")
    seg.add_stroke([4, 120], [6, 6], 1, width=4)
    seg.add_stroke([44, 84], [64, 64], 2, width=4)
    assert seen[0].startswith('paint at least two classes to train; painted: "class 1"')
    assert seen[-2].startswith("training random_forest on ")
    assert seen[-2].endswith(" painted pixels of 2 classes…")
    assert seen[-1].startswith("trained random_forest")


def test_deleting_clearing_and_removing_a_class_are_undone_whole(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img, live_update=False)
    a = seg.add_stroke([4, 120], [6, 6], 1)
    b = seg.add_stroke([44, 84], [64, 64], 2)
    c = seg.add_stroke([4, 120], [120, 120], 1)
    seg.set_strokes([a, c])  # b deleted in the browser
    assert seg.undo() and seg.strokes == [a, b, c]
    seg.clear()
    assert seg.undo() and seg.strokes == [a, b, c]
    seg.add_class("extra")
    seg.rename_class(1, "background")
    seg.remove_class(2)
    assert [x.id for x in seg.classes] == [1, 3] and seg.strokes == [a, c]
    assert seg.undo()
    assert [x.name for x in seg.classes] == ["background", "class 2", "extra"]
    assert seg.strokes == [a, b, c]
    assert seg.redo() and [x.id for x in seg.classes] == [1, 3]
    assert seg.undo() and seg.undo()  # the removal, then Add class
    assert [x.id for x in seg.classes] == [1, 2]
    seg.add_stroke([5, 9], [5, 5], 0, width=3)  # the eraser
    assert seg.strokes[-1].erases and seg.labels[5, 7] == 0


def test_removing_a_class_in_a_project_is_undone_on_every_image(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / name)
    project = Project.open(tmp_path / "p.json", [tmp_path / "a.png", tmp_path / "b.png"])
    project.set_strokes(1, 0, [Stroke((1, 20), (3, 3), 2)])
    seg = Segmenter(live_update=False)
    seg.open_project(project)
    seg.add_stroke([1, 20], [5, 5], 1)
    seg.add_stroke([1, 20], [9, 9], 2)
    seg.remove_class(2)
    assert project.strokes(1, 0) == [] and [s.label for s in seg.strokes] == [1]
    assert seg.undo()
    assert [s.label for s in project.strokes(1, 0)] == [2]
    assert [s.label for s in seg.strokes] == [1, 2] and [c.id for c in seg.classes] == [1, 2]
    assert [s.label for s in Project.open(tmp_path / "p.json").strokes(1, 0)] == [2]


def test_the_docs_list_the_shortcuts_of_the_table():
    from segdash.ui.shortcuts import SHORTCUTS, key_map, markdown_table

    assert markdown_table() in (ROOT / "docs" / "dashboard.md").read_text()
    keys = key_map()
    assert keys["ctrl+shift+z"] == ["redo", None] and keys["ctrl+y"] == ["redo", None]
    assert keys["7"] == ["class", "7"] and keys["space"][0] == "pan_hold"
    assert "backspace" not in keys  # the freehand tool's own
    assert len({s.action for s in SHORTCUTS}) == len(SHORTCUTS)


def test_class_names_in_the_status_line_are_text_not_html(two_texture):
    from segdash.ui import SegdashApp

    img, _, _ = two_texture
    app = SegdashApp(image=img)
    try:
        seg = app.segmenter
        seg.rename_class(1, '<img src="x" onerror="alert(1)">')
        app.canvas.on_draw({"xs": [[4.5, 100.5]], "ys": [[100.5, 100.5]],
                            "stroke_class": [1], "stroke_color": ["#e69f00"],
                            "stroke_width": [5.0], "stroke_fill": [False]})
        assert app.wait_idle(60)
        app._flush()
        assert "<img" in seg.status and "<img" not in app.status.object
        assert "&lt;img" in app.status.object
    finally:
        app.close()
