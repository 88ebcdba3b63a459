"""*Apply to project* in the dashboard: the batch engine in a child process over every
project image, with progress, cancel, browsable results and a zip."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from segdash.project import Project
from segdash.ui.app import SegdashApp
from segdash.ui.cards import apply as apply_card

from .test_segmenter_project import paint, three_image_folder


def _app(tmp_path) -> tuple[SegdashApp, list]:
    paths, truths = three_image_folder(tmp_path)
    app = SegdashApp(project=Project.open(tmp_path / "segdash-project.json", paths))
    app.segmenter.extractor("basic").sigma_max = 2.0
    app.wait_idle(60)
    paint(app.segmenter)
    app.segmenter.select(1)
    paint(app.segmenter)
    app.wait_idle(60)
    app._flush()
    return app, list(zip(paths, truths, strict=True))


def test_apply_to_project_writes_labels_for_every_image_with_progress(tmp_path, monkeypatch):
    app, images = _app(tmp_path)
    card = app.cards.apply
    try:
        assert not card.start_button.disabled
        card.start_button.clicks += 1
        run = card.run
        assert run is not None and run.wait(180), "the run did not end"
        card._show()
        assert run.state == "done", run.message
        assert "3 image(s) segmented" in card.info.object
        assert run.images == (3, 3) and card.progress.value == 1000
        for path, truth in images:
            labels = np.asarray(Image.open(run.results / f"{path.stem}_labels.png"))
            assert (labels == truth).mean() > 0.95
        assert sorted(card.result_select.options) == [f"{p.stem}_overlay.png"
                                                      for p, _ in images]
        names = zipfile.ZipFile(io.BytesIO(card._zip().getvalue())).namelist()
        assert sorted(names) == sorted(f"{p.stem}_{k}.png" for p, _ in images
                                       for k in ("labels", "overlay"))
        first = run.results / f"{images[0][0].stem}_overlay.png"
        card._load_preview(str(first))
        app._flush()
        assert card.preview.object == first.read_bytes()
        # an overlay too large to preview (a slide's) is named, not sent to the page
        monkeypatch.setattr(apply_card, "MAX_PREVIEW_BYTES", first.stat().st_size - 1)
        card._load_preview(str(first))
        app._flush()
        assert card.preview.object is None
        assert "too large to preview here: it is in the zip" in card.info.object
        out = run.out
    finally:
        app.close()
    assert not out.exists()  # the session's results go with it


def test_apply_to_project_can_be_cancelled(tmp_path):
    app, _ = _app(tmp_path)
    card = app.cards.apply
    try:
        card.start_button.clicks += 1
        card.cancel_button.clicks += 1
        assert card.run.wait(60)
        card._show()
        assert card.run.state == "cancelled" and card.info.object == "cancelled"
        assert not card.start_button.disabled
    finally:
        app.close()


def test_the_project_card_removes_the_image_on_screen_once_asked_twice(tmp_path):
    app, images = _app(tmp_path)  # scene1 on screen, scene0 and scene1 painted
    card = app.cards.project
    try:
        card.remove_button.clicks += 1
        assert card.confirm.visible
        assert "Remove **scene1.png** and its 2 stroke(s)" in card.confirm_text.object
        card.keep_button.clicks += 1  # changed their mind: nothing happens
        assert not card.confirm.visible and len(app.segmenter.project.images) == 3
        card.remove_button.clicks += 1
        card.confirm_button.clicks += 1
        assert app.wait_idle(60)
        app._flush()
        seg = app.segmenter
        assert [i.name for i in seg.project.images] == ["scene0.png", "scene2.png"]
        assert seg.image_name == "scene2.png"  # its neighbour
        assert "of 1 image(s)" in seg.status, seg.status
        assert len(card._entries) == 2 and not card.confirm.visible
        assert images[1][0].exists()  # the file stays
    finally:
        app.close()
