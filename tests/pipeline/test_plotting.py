"""A figure is drawn without a display, saved as a PNG and closed, whatever happens while
it is drawn; class names in scripts no installed font has cost no warning a glyph."""

import warnings

import pytest

from tlfs.pipeline.plotting import saved_figure


def test_a_figure_is_saved_and_closed_and_names_in_any_script_draw_without_warnings(tmp_path):
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph's UserWarning would fail here
        with saved_figure(tmp_path / "f.png", (3, 2)) as (fig, ax):
            ax.set_xticks([0, 1], ["日本", "Café"])
            ax.set_title("한국어 кириллица")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plt.get_fignums()


def test_a_figure_that_fails_while_drawn_is_closed_and_not_saved(tmp_path):
    import matplotlib.pyplot as plt

    with pytest.raises(ZeroDivisionError):
        with saved_figure(tmp_path / "f.png", (3, 2)):
            1 / 0
    assert not (tmp_path / "f.png").exists() and not plt.get_fignums()
