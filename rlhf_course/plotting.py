"""A consistent, colour-blind-safe look for every figure in the course."""
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


def use_course_style() -> None:
    """Set matplotlib defaults: Okabe–Ito colour cycle, readable fonts, light grid."""
    mpl.rcParams.update(
        {
            "axes.prop_cycle": mpl.cycler(color=list(PALETTE.values())),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "font.size": 11,
            "legend.frameon": False,
        }
    )
