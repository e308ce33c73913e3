"""Favicon and social card for the book, drawn with matplotlib (nothing downloaded).

The motif is the course's last lesson: the proxy reward keeps rising with KL while the gold reward
rises, peaks and falls (reward over-optimisation). Run from the repository root:
`.venv/bin/python scripts/make_book_images.py` rewrites book/_static/favicon.png and social-card.png."""
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

BLUE, ORANGE, INK = "#0072B2", "#E69F00", "#1b1f24"   # Okabe–Ito blue and orange
out = "book/_static/"

d = np.linspace(0.0, 3.2, 200)
proxy = 1.05 * d
gold = d * (1.25 - 0.55 * d)

# Favicon: 64 x 64 px, the two curves on a dark rounded square.
fig = plt.figure(figsize=(1, 1), dpi=64)
ax = fig.add_axes([0, 0, 1, 1])
ax.add_patch(matplotlib.patches.FancyBboxPatch((0.04, 0.04), 0.92, 0.92, boxstyle="round,pad=0,rounding_size=0.18",
                                               transform=ax.transAxes, color=INK))
ax.plot(0.14 + 0.72 * d / 3.2, 0.18 + 0.62 * proxy / proxy.max(), color=BLUE, lw=5.5, solid_capstyle="round",
        transform=ax.transAxes)
ax.plot(0.14 + 0.72 * d / 3.2, 0.18 + 0.62 * np.clip(gold, 0, None) / gold.max() * 0.75, color=ORANGE, lw=5.5,
        solid_capstyle="round", transform=ax.transAxes)
ax.set_xlim(0, 1); ax.set_ylim(0, 1); ax.axis("off")
fig.savefig(out + "favicon.png", dpi=64, transparent=True)
plt.close(fig)

# Social card: 1200 x 630 px (the size Open Graph and most sites use).
fig = plt.figure(figsize=(12, 6.3), dpi=100)
fig.patch.set_facecolor(INK)
fig.text(0.06, 0.80, "RLHF from first principles", color="white", fontsize=46, weight="bold", va="top")
fig.text(0.06, 0.64, "An open course: the policy gradient, PPO, reward models\nand RLHF on a language model,"
         " derived, coded and auto-graded.", color="#d0d7de", fontsize=21, va="top", linespacing=1.4)
ax = fig.add_axes([0.66, 0.12, 0.29, 0.36])
ax.set_facecolor(INK)
ax.plot(d, proxy, color=BLUE, lw=4, label="proxy reward")
ax.plot(d, gold, color=ORANGE, lw=4, label="gold reward")
ax.set_xlabel("√KL from the starting policy", color="#d0d7de", fontsize=14)
for side in ("top", "right"):
    ax.spines[side].set_visible(False)
for side in ("left", "bottom"):
    ax.spines[side].set_color("#8c959f")
ax.set_xticks([]); ax.set_yticks([])
ax.legend(frameon=False, labelcolor="white", fontsize=14, loc="upper left")
fig.text(0.06, 0.10, "Jupyter Book · nbgrader exercises · a laptop CPU",
         color="#8c959f", fontsize=15)
fig.savefig(out + "social-card.png", dpi=100, facecolor=INK)
plt.close(fig)
