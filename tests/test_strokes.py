import numpy as np
import pytest

from segdash.strokes import Stroke, rasterize_strokes, strokes_from_json, strokes_to_json


def test_x_is_column_and_y_is_row_from_the_top():
    mask = rasterize_strokes([Stroke((5,), (2,), 3, width=1)], (10, 8))
    assert mask.dtype == np.uint16 and mask.shape == (10, 8)
    assert mask[2, 5] == 3 and np.count_nonzero(mask) == 1


def test_horizontal_line_has_the_stroke_width():
    mask = rasterize_strokes([Stroke((2, 17), (10, 10), 1, width=5)], (21, 21))
    column = mask[:, 10]
    assert np.count_nonzero(column) == 5
    assert column[8:13].tolist() == [1] * 5


def test_later_strokes_paint_over_earlier_ones():
    a = Stroke((0, 19), (5, 5), 1, width=3)
    b = Stroke((10, 10), (0, 19), 2, width=3)
    mask = rasterize_strokes([a, b], (20, 20))
    assert mask[5, 10] == 2 and mask[5, 2] == 1
    assert rasterize_strokes([b, a], (20, 20))[5, 10] == 1


def test_points_outside_the_image_are_clipped():
    mask = rasterize_strokes([Stroke((-50, 60), (5, 5), 2, width=1)], (10, 10))
    assert mask[5].tolist() == [2] * 10
    assert np.count_nonzero(mask) == 10


def test_one_point_stroke_makes_a_dot_of_its_width():
    mask = rasterize_strokes([Stroke((10,), (10,), 1, width=7)], (21, 21))
    assert mask[10, 10] == 1
    assert np.count_nonzero(mask[10]) == 7 and np.count_nonzero(mask[:, 10]) == 7
    assert mask[7, 7] == 0  # round, not square


def test_empty_and_nan_strokes_are_ignored():
    strokes = [Stroke((), (), 1), Stroke((np.nan, np.nan), (1, 2), 2),
               Stroke((1, np.nan, 3), (1, 1, 1), 1, width=1)]
    mask = rasterize_strokes(strokes, (5, 5))
    assert set(np.unique(mask)) == {0, 1}
    assert mask[1, 1:4].tolist() == [1, 1, 1]


def test_stroke_validation():
    with pytest.raises(ValueError, match="as many x as y"):
        Stroke((1, 2), (1,), 1)
    with pytest.raises(ValueError, match="class id"):
        Stroke((1,), (1,), -1)  # 0 is the eraser
    with pytest.raises(ValueError, match="fill"):
        Stroke((1,), (1,), 1, fill="yes")
    with pytest.raises(ValueError, match="width"):
        Stroke((1,), (1,), 1, width=-2)


def test_json_round_trip_keeps_strokes_and_extra():
    strokes = [Stroke((1.5, 2), (3, 4), 2, 3.0), Stroke((0,), (0,), 1, 9)]
    text = strokes_to_json(strokes, classes=[{"id": 1}], image_shape=[5, 6])
    back, extra = strokes_from_json(text)
    assert back == strokes
    assert extra == {"classes": [{"id": 1}], "image_shape": [5, 6]}


@pytest.mark.parametrize(("text", "message"), [
    ("not json", "not valid JSON"),
    ('{"strokes": []}', "not a segdash annotations"),
    ('{"format": "segdash-annotations", "strokes": [{"x": [1], "y": [1, 2], "label": 1}]}',
     "stroke 0"),
    ('{"format": "segdash-annotations", "strokes": [{"x": [1], "y": [1]}]}', "stroke 0"),
])
def test_malformed_annotations_are_refused_with_reason(text, message):
    with pytest.raises(ValueError, match=message):
        strokes_from_json(text)
