"""One IoU against ground truth (issue 22): the result panel and Compare's subsets score a
prediction with one function and the same mask (display threshold, edge refinement, the whole
box); the panel names the mask it scores, and the accepted mask's IoU does not move with the taps."""

from __future__ import annotations

import re

import numpy as np
import pytest

from hcviewer.annotation.mask_crops import box_map_iou, crop_iou
from test_gui_app import _segment_first_box, _wait, _write_dataset, make_window, window  # noqa: F401

pytestmark = pytest.mark.slow


def _scores(window) -> dict[str, float]:
    """The panel's IoU line as {"accepted mask": v, "prediction": v}."""
    line = window.result_label.text().split("IoU vs ground truth: ")[1]
    found = {"accepted mask": re.search(r"accepted mask (\d\.\d\d)", line),
             "prediction": re.search(r"prediction (\d\.\d\d) \(taps ", line)}
    return {name: float(match.group(1)) for name, match in found.items() if match}


def test_the_panel_and_compare_give_one_iou_for_the_same_box_and_taps(window, qtbot):
    window.display_panel.threshold.setValue(35)  # not 0.5: Compare scored at 0.5 whatever was shown
    box_id = _segment_first_box(qtbot, window)
    _wait(qtbot, lambda: window.state.views[box_id].taps == window.state.model_info.taps)
    view, box = window.state.views[box_id], window.canvas.selected_box()
    expected = box_map_iou(view.figure_ground, view.box, 0.35, box.gt_crop)
    assert _scores(window) == {"prediction": pytest.approx(expected, abs=0.005)}
    assert f"this prediction {expected:.2f} (taps s4+s8+s16+top, threshold 0.35)" in window.result_label.text()
    with qtbot.waitSignal(window.model.worker.compared, timeout=60000) as compared:
        window.segmentation.open_compare()
    assert compared.args[0].iou["all taps"] == pytest.approx(expected, abs=1e-3)
    panel = window.segmentation.compare_window.panel
    _wait(qtbot, lambda: "all taps" in panel.titles)
    assert panel.titles["all taps"] == f"all taps  IoU {expected:.2f}"
    assert "threshold 0.35, edges refined" in window.segmentation.compare_window.caption.text()


def test_toggling_a_tap_does_not_change_the_accepted_masks_iou(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    window.annotation.accept_selected()
    box = window.canvas.selected_box()
    accepted = crop_iou(box.mask_crop, box.gt_crop)
    before = _scores(window)
    assert before == {"accepted mask": pytest.approx(accepted, abs=0.005), "prediction": before["prediction"]}
    assert "; shown prediction " in window.result_label.text()
    window.layers.boxes["s4"].setChecked(False)
    _wait(qtbot, lambda: window.state.views[box_id].taps == ("s8", "s16", "top")
          and "taps s8+s16+top," in window.result_label.text())
    after = _scores(window)
    assert after["accepted mask"] == before["accepted mask"]
    view = window.state.views[box_id]
    toggled = box_map_iou(view.figure_ground, view.box, window.display.threshold, box.gt_crop)
    assert after["prediction"] == pytest.approx(toggled, abs=0.005)
    assert not np.isclose(toggled, accepted, atol=1e-3)  # the shown prediction did change
