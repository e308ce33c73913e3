"""A consistent, colour-blind-safe, readable look for every figure in the course.

The book's text column is 672 CSS px wide: 7 in at the browser's 96 px per inch. A figure at most
``COLUMN_WIDTH_IN`` wide is shown at its own size, so a 9 pt legend stays 9 pt on the page; a wider one
is shrunk, and its text with it. Figures with several panels put at most two side by side. In a
notebook, figures are SVG (sharp on any screen, at any zoom); files saved with ``savefig`` are PNG at
``savefig.dpi`` = 200 (2x).
"""
import matplotlib as mpl

# Okabe–Ito palette: distinguishable under the common forms of colour blindness.
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "red": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}

COLUMN_WIDTH_IN = 7.0   # the book's 672-px text column at 96 px/in
MIN_FONT_PT = 9.0       # smallest text (ticks, legends, annotations) at the size the page shows it

COURSE_RC = {
    "axes.prop_cycle": mpl.cycler(color=list(PALETTE.values())),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 200,          # PNG files at 2x: sharp on high-density screens
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "legend.fontsize": 9.5,
    "legend.title_fontsize": 9.5,
    "figure.titlesize": 12,
    "legend.frameon": False,
    "svg.fonttype": "path",      # text as outlines: looks the same without the fonts installed
    "svg.hashsalt": "rlhf-course",  # stable ids inside the SVG from one build to the next
}


def _inline_svg() -> None:
    """In a Jupyter kernel, show figures as SVG instead of 100-dpi PNG. Elsewhere, do nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    # metadata Date None: the same figure gives the same SVG bytes on every build.
    set_matplotlib_formats("svg", bbox_inches="tight", metadata={"Date": None})


def use_course_style() -> None:
    """Set matplotlib defaults: Okabe–Ito colour cycle, fonts ≥ 9 pt, light grid; SVG in notebooks."""
    mpl.rcParams.update(COURSE_RC)
    _inline_svg()
