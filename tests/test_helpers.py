"""Unit tests of the installed helper package rlhf_course."""
import matplotlib as mpl
import numpy as np
import pytest

import rlhf_course
from rlhf_course import PALETTE, finite_difference_grad, seed_everything, use_course_style


def test_installed_not_path_hacked():
    # The package must come from the editable install, not from a sys.path edit in a notebook.
    assert rlhf_course.__file__.endswith("rlhf_course/__init__.py")


def test_seed_everything_repeats_numpy_python_and_torch():
    import random

    import torch

    draws = []
    for _ in range(2):
        rng = seed_everything(3)
        draws.append((rng.normal(size=3), np.random.rand(2), random.random(), torch.rand(2).numpy()))
    for a, b in zip(*draws):
        assert np.array_equal(a, b)
    assert not np.array_equal(seed_everything(4).normal(size=3), draws[0][0])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        seed_everything(bad)


def test_finite_difference_matches_analytic_gradient():
    rng = np.random.default_rng(0)
    a, x = rng.normal(size=(4, 4)), rng.normal(size=4)
    f = lambda v: float(v @ a @ v + np.sin(v).sum())  # noqa: E731
    analytic = (a + a.T) @ x + np.cos(x)
    assert np.allclose(finite_difference_grad(f, x), analytic, atol=1e-7)


def test_finite_difference_keeps_shape_and_input():
    x = np.arange(6.0).reshape(2, 3)
    before = x.copy()
    g = finite_difference_grad(lambda v: float((v ** 2).sum()), x)
    assert g.shape == (2, 3) and np.allclose(g, 2 * before, atol=1e-6)
    assert np.array_equal(x, before)


def test_finite_difference_detects_a_wrong_gradient():
    # The oracle must be able to say "no": d/dx x^3 at 2 is 12, not 4 (the derivative of x^2).
    assert not np.isclose(finite_difference_grad(lambda v: float(v[0] ** 3), np.array([2.0]))[0], 4.0)


def test_course_style_sets_okabe_ito_cycle():
    mpl.rcdefaults()
    use_course_style()
    colours = [c["color"] for c in mpl.rcParams["axes.prop_cycle"]]
    assert colours[:3] == [PALETTE["blue"], PALETTE["orange"], PALETTE["green"]]
    mpl.rcdefaults()


def test_panels_html_is_one_row_of_svg_images_each_with_its_alt_text():
    import base64
    import html as html_lib
    import re

    import matplotlib.pyplot as plt

    from rlhf_course.plotting import PANEL_WIDTH_IN, panels_html

    figs = []
    for title in ("left", "right"):
        fig, ax = plt.subplots(figsize=(PANEL_WIDTH_IN, 3.4))
        ax.plot([0, 1], [0, 1])
        ax.set_title(title)
        figs.append(fig)
    row = panels_html(figs, alt=["the left panel", 'the "right" one'])
    assert row.startswith('<div class="course-panels">') and row.endswith("</div>")
    images = re.findall(r'<img class="course-panel" src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]*)">', row)
    assert [html_lib.unescape(alt) for _, alt in images] == ["the left panel", 'the "right" one']
    svg = base64.b64decode(images[1][0]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # the width the panel is shown at: 3.4 in plus what a tight box adds, so two fit the 672-px column
    width_pt = float(re.search(r'<svg[^>]*width="([\d.]+)pt"', svg).group(1))
    assert 2 * width_pt * 4 / 3 + 8 <= 700, width_pt
    with pytest.raises(ValueError, match="one alt text per figure"):
        panels_html(figs, alt=["only one"])
    with pytest.raises(ValueError, match="needs an alt text"):
        panels_html(figs, alt=["fine", "  "])
    for fig in figs:
        plt.close(fig)


def test_show_panels_displays_one_html_output_and_closes_the_figures(monkeypatch):
    import matplotlib.pyplot as plt
    from IPython import display as ipy_display

    shown = []
    monkeypatch.setattr(ipy_display, "display", lambda obj: shown.append(obj))
    figs = [plt.subplots(figsize=(3.4, 3))[0] for _ in range(3)]
    rlhf_course.show_panels(iter(figs), alt=["a", "b", "c"])
    assert len(shown) == 1 and shown[0]._repr_html_().count("<img") == 3
    assert not set(plt.get_fignums()) & {f.number for f in figs}


def test_share_limits_gives_every_panel_the_union_of_their_ranges():
    import matplotlib.pyplot as plt

    axes = [plt.subplots(figsize=(3.4, 3))[1] for _ in range(3)]
    for ax, (lo, hi) in zip(axes, [(0, 1), (-2, 0.5), (0.2, 4)]):
        ax.set_xlim(lo, hi)
        ax.set_ylim(10 * lo, 10 * hi)
    assert rlhf_course.share_limits(axes, "x") == (-2, 4)
    assert all(ax.get_xlim() == (-2, 4) for ax in axes)
    assert [ax.get_ylim() for ax in axes] == [(0, 10), (-20, 5), (2, 40)]     # y untouched
    axes[0].invert_yaxis()                              # an inverted axis stays inverted
    rlhf_course.share_limits(axes[:2], "y")
    assert axes[0].get_ylim() == (10, -20) and axes[1].get_ylim() == (-20, 10)
    with pytest.raises(ValueError, match="'x' or 'y'"):
        rlhf_course.share_limits(axes, "z")
    with pytest.raises(ValueError, match="no axes"):
        rlhf_course.share_limits([], "x")
    plt.close("all")
