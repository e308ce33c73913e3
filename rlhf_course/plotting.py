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


PANEL_WIDTH_IN = 3.4    # two panels and a gap fill the 7 in column; on a phone each takes a whole row


def image_html(image: bytes, mime: str, alt: str, attrs: str = "") -> str:
    """One ``<img>`` that carries its picture (a data URI, so the page needs no other file).

    image: the file's bytes; mime: "image/svg+xml" or "image/png"; alt: its alt text (escaped here);
    attrs: more attributes, written before ``src`` (``'class="course-panel"'``).
    """
    import base64
    import html

    data = base64.b64encode(image).decode("ascii")
    return (f'<img {attrs + " " if attrs else ""}src="data:{mime};base64,{data}" '
            f'alt="{html.escape(str(alt), quote=True)}">')


def panels_html(figs, alt) -> str:
    """An HTML row of figures, one SVG image per panel, that wraps to a column on a narrow screen.

    figs: n matplotlib figures (about ``PANEL_WIDTH_IN`` wide each); alt: n alt texts, one per panel.
    Each image keeps its natural size while the row has room (text stays ≥ 9 pt), so a 375-px phone
    shows the panels one under the other instead of shrinking both to half size. The images are data
    URIs: the page and the notebook need no other file.
    """
    import io

    figs, alt = list(figs), list(alt)
    if not figs or len(alt) != len(figs):
        raise ValueError(f"panels_html: one alt text per figure, got {len(figs)} figure(s) and {len(alt)} alt text(s)")
    if any(not str(text).strip() for text in alt):
        raise ValueError("panels_html: every panel needs an alt text that says what it shows")
    images = []
    for fig, text in zip(figs, alt):
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        images.append(image_html(buf.getvalue(), "image/svg+xml", text, 'class="course-panel"'))
    return '<div class="course-panels">' + "".join(images) + "</div>"


def share_limits(axes, which: str = "y") -> tuple[float, float]:
    """Give every axes in ``axes`` the same x or y range, the union of their own; return it.

    Panels drawn as separate figures (``show_panels``) cannot use ``plt.subplots(sharex=True)``: this
    is the same thing, done after drawing, so that panels compare at a glance.
    """
    if which not in ("x", "y"):
        raise ValueError(f"share_limits: which must be 'x' or 'y', got {which!r}")
    axes = list(axes)
    if not axes:
        raise ValueError("share_limits: no axes given")
    limits = [getattr(ax, f"get_{which}lim")() for ax in axes]
    lo = min(min(pair) for pair in limits)
    hi = max(max(pair) for pair in limits)
    for ax, (first, last) in zip(axes, limits):
        getattr(ax, f"set_{which}lim")((hi, lo) if first > last else (lo, hi))   # an inverted axis stays so
    return lo, hi


def show_panels(figs, alt) -> None:
    """Show figures side by side, stacking on a narrow screen (``panels_html``), and close them.

    Use it instead of ``plt.subplots(1, 2)`` when panels sit side by side: in a notebook or the book,
    the cell's output is one HTML row; a caption and a name given to the cell apply to the whole row.
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    figs = list(figs)
    row = panels_html(figs, alt)
    for fig in figs:
        plt.close(fig)
    display(HTML(row))
