"""The view state tells its subscribers what changed, once per change and once for changes made
together (Qt-free)."""

from __future__ import annotations

import numpy as np

from hcviewer.app.viewer_state import BoxView, ViewerState


def _view() -> BoxView:
    return BoxView(np.array([0.0, 0.0, 4.0, 4.0]), ("a",), np.ones((2, 2)), None, None, None, {}, 0.0)


def test_each_change_is_told_with_its_name():
    state, heard = ViewerState(), []
    state.subscribe(heard.append)
    state.show_image(np.zeros((4, 4, 3), np.uint8))
    state.select(3)
    state.select(3)  # no change: nothing told
    state.show_views({3: _view()})
    assert heard == [{"image"}, {"selection"}, {"views"}] and state.selected_id == 3 and 3 in state.views


def test_changes_made_together_are_told_once_at_the_end():
    state, heard = ViewerState(), []
    state.subscribe(heard.append)
    with state.changes():
        state.show_views({1: _view()})
        with state.changes():
            state.changed("document")
        assert heard == []  # not before the outermost block ends
    assert heard == [{"views", "document"}]
    with state.changes():
        pass
    assert heard == [{"views", "document"}]  # nothing changed: nothing told
