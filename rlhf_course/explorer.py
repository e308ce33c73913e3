"""Explorers: controls that redraw a figure, and that do not pretend to in the static book.

    explore(show_clip, {"eps": eps_slider, "A": sign_buttons},
            alt="The clipped objective and its gradient against the ratio, for ε = {eps:.2f} and A = {A:+.0f}.")

In a running notebook (Jupyter, Colab, Binder) moving a control calls ``show(**values)`` again and replaces
the figure. The static book has no Python to call: when the book's build runs a page, with
``RLHF_COURSE_STATIC_BOOK=1`` in the environment (set by ``book/_ext/course_launch.py``), the controls are
disabled and a line above them says that the figure is a static preview for the values shown, and how to get
a live one. (Precomputing a figure for every combination of values instead would take 884 images for the
bandit's three controls.) Either way the figure is an ``<img>`` whose alt text names the values it was drawn for,
and every control shows its whole label and is wide enough to use.
"""
from __future__ import annotations

import base64
import io
import os
from typing import Callable

import ipywidgets as widgets

from rlhf_course.plotting import image_html

STATIC_BOOK_ENV = "RLHF_COURSE_STATIC_BOOK"
CONTROL_WIDTH = "22em"      # label + track + readout; a phone's column holds one control per line
MIN_SLIDER_WIDTH = "14em"   # never the 12-px track of a slider squeezed between two others
STATIC_NOTE = ('<p style="margin: 0 0 0.5em; line-height: 1.4; white-space: normal"><strong>Static preview.</strong> '
               "The figure is drawn for the values shown and the controls are disabled: this page has no Python "
               "behind it. To explore, launch the page as a notebook (the rocket button at the top of the page) "
               "or open it in Jupyter.</p>")


def static_book() -> bool:
    """True while the book's build executes the page (its figures are then frozen into a static page)."""
    return os.environ.get(STATIC_BOOK_ENV, "") not in ("", "0")


def figure_html(show: Callable[..., None], values: dict, alt: str | Callable[..., str]) -> str:
    """Call ``show(**values)`` and return the figure it shows as an ``<img>`` with alt text.

    Args:
        show: draws one matplotlib figure for the keyword arguments and calls ``plt.show()``.
        values: argument name -> value.
        alt: a format string over the same names ("... δ = {d:.2f}"), or a function of them returning the text.
    Returns:
        HTML of one image (SVG or PNG, as the notebook's inline backend makes it), embedded as a data URI.
    """
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    before = set(plt.get_fignums())
    with capture_output() as captured:            # what plt.show() displays in a notebook
        show(**values)
    shown = [out.data for out in captured.outputs if {"image/svg+xml", "image/png"} & set(out.data)]
    if shown:
        data = shown[-1]
    else:                                         # no inline backend (plain Python): the figure is still open
        new = [n for n in plt.get_fignums() if n not in before]
        if not new:
            raise RuntimeError(f"{getattr(show, '__name__', show)} drew no figure: does it call plt.show()?")
        buffer = io.BytesIO()
        plt.figure(new[-1]).savefig(buffer, format="png", bbox_inches="tight")
        for n in new:
            plt.close(n)
        data = {"image/png": buffer.getvalue()}
    if "image/svg+xml" in data:
        mime, image = "image/svg+xml", data["image/svg+xml"].encode()
    else:                                         # the inline backend's PNG comes base64-encoded already
        png = data["image/png"]
        mime, image = "image/png", base64.b64decode(png) if isinstance(png, str) else png
    text = alt(**values) if callable(alt) else alt.format(**values)
    style = 'style="display: block; max-width: 100%; height: auto; margin: 0.25em 0"'
    return image_html(image, mime, text, style)


def _fit(control: widgets.Widget) -> None:
    """The whole label (not "temperat…"), a usable width, and room to wrap onto the next line."""
    control.style.description_width = "initial"
    control.layout.margin = "0 1.5em 0.4em 0"
    control.layout.max_width = "100%"
    if isinstance(control, widgets.Checkbox):
        control.indent = False                      # no empty label column in front of the box
        control.layout.width = "auto"
        control.layout.flex = "0 0 auto"
    elif isinstance(control, widgets.ToggleButtons):
        control.style.button_width = "auto"        # as wide as "A = −1", not 148 px each
        control.layout.display = "flex"             # the label beside the buttons, not above them
        control.layout.align_items = "center"
        control.layout.width = "auto"
        control.layout.flex = "0 0 auto"
    elif isinstance(control, (widgets.RadioButtons, widgets.Dropdown)):
        control.layout.width = "auto"
        control.layout.flex = "0 0 auto"
    else:
        control.layout.width = CONTROL_WIDTH
        control.layout.min_width = MIN_SLIDER_WIDTH
        control.layout.flex = "0 1 auto"


def explore(show: Callable[..., None], controls: dict[str, widgets.ValueWidget],
            alt: str | Callable[..., str], static: bool | None = None) -> widgets.VBox:
    """An explorer: `controls` (argument name -> slider, checkbox, toggle buttons) drive ``show(**values)``.

    Args:
        show: draws the figure for the controls' values and calls ``plt.show()``.
        controls: argument name of `show` -> the widget that sets it.
        alt: the figure's alt text, a format string over the argument names, or a function of them.
        static: draw a static preview (controls disabled, labelled as such); default: inside the book's build.
    Returns:
        the widget to leave as the cell's last expression.
    """
    static = static_book() if static is None else static
    for control in controls.values():
        _fit(control)
        control.disabled = static
    figure = widgets.HTML(layout=widgets.Layout(width="100%"))

    def redraw(_change=None):
        figure.value = figure_html(show, {name: c.value for name, c in controls.items()}, alt)

    redraw()
    if not static:
        for control in controls.values():
            control.observe(redraw, names="value")
    row = widgets.Box(list(controls.values()),
                      layout=widgets.Layout(display="flex", flex_flow="row wrap", align_items="center",
                                            width="100%"))
    parts = ([widgets.HTML(STATIC_NOTE, layout=widgets.Layout(width="100%"))] if static else []) + [row, figure]
    return widgets.VBox(parts, layout=widgets.Layout(width="100%"))
