"""The built book as readers meet it: every page of the table of contents in a real headless Chromium
(tests/browser.py), at 375 and 1280 px, in light and dark mode, offline (issue 10).

One Chromium process, two tabs sharing the pages. There are four ways to load a page (COMBOS): 1280 px light and
dark and 375 px light from a local origin (http://book.test/, answered from the built folder through the
DevTools protocol, 404 for a missing file), and 375 px dark from file://, as a reader who opens the folder
gets it. A page with saved widgets is loaded all four ways; every other page at 1280 px light and at 375 px
(light over http and dark from file:// on alternate pages), and every third one at 1280 px dark too
(combos_for): each page at both widths, each way on at least a third of the pages, for 60 % of the loads.
Each load waits for the load event, MathJax's startup promise, the saved widgets and the fonts (no fixed
sleeps), then checks:

- the ☰ a reader can see opens the table of contents (375 px: a drawer that Escape closes; 1280 px: the
  sidebar hides and comes back), and the page-contents button, where shown, opens the page's contents;
- no console error, no failed request (an HTTP error or a network error), no request that leaves the book;
- every formula is typeset, every saved widget drawn, every visible icon drawn from a font that loaded;
- the colour scheme follows the reader's system setting; one top bar and one search field on screen;
- at 375 px, nothing makes the page scroll sideways;
- panels shown side by side (rlhf_course.show_panels) keep at least 90 % of their size, so they stack on a
  phone, and share a line two by two where the column holds two.

Once per page (1280 px, light): axe-core (tests/vendor/axe-core) finds no serious or critical violation,
every image has alt text, no formula is a Tab stop (unless it scrolls), every Tab stop shows a focus ring.
Then the search page: its snippets are text of the page found (no buttons, no contents list), their math
typeset (no raw TeX).

The per-page report (requests, bytes, first paint, axe findings, Tab stops) is written to
test-artifacts/browser_report.{json,md}, with screenshots of the chapter pages (1280 px) and of the open table
of contents at 375 px (test-artifacts/browser/).

Findings that come from page content, widgets or launch buttons, which others fix, are listed in KNOWN below:
reported, not failed on. An entry that no longer matches anything fails test_known_exceptions_are_still_needed,
so the list can only shrink. To iterate on this file without a build: BOOK_HTML=/path/to/_build/html.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.launch import toc_docnames
from browser import SITE, Browser, BrowserError
from conftest import REPO, built_book

AXE = REPO / "tests" / "vendor" / "axe-core" / "axe.min.js"
WIDTHS = (1280, 375)
SCHEMES = ("light", "dark")
BLOCKING_IMPACTS = ("serious", "critical")

# =============================================================================================================
# KNOWN EXCEPTIONS — findings that come from page content, widgets or launch-button targets, which other
# people fix. (page glob, check, key glob) -> who fixes it and what is wrong. The check is a Finding's: "axe"
# (key: the rule id), "failed" / "external" (the URL, without http://book.test/), "console" (the message),
# "alt" / "focus-ring" / "icons" / "overflow" (the element), "toggle", "math", "widgets", "layout", "theme",
# "keyboard", "panels". Remove an entry when its cause is fixed: test_known_exceptions_are_still_needed fails on an
# entry that matches nothing.
# =============================================================================================================
KNOWN: dict[tuple[str, str, str], str] = {}


def _toc_pages() -> list[str]:
    """Every page of _toc.yml as a built HTML path ("book/x.html")."""
    return [f.removesuffix(".md").removesuffix(".ipynb") + ".html" for f in toc_docnames()]


PAGES = _toc_pages()

# ------------------------------------------------------------------------------------------- in-page probes
# Installed in every page after it loads; each returns JSON. Kept in one place so the checks read as a list.
PROBES = r"""
window.__probe = (() => {
  const visible = (el) => {
    if (!el || !el.isConnected || !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const inViewport = (el) => {
    const r = el.getBoundingClientRect();
    return r.right > 0 && r.bottom > 0 && r.left < innerWidth && r.top < innerHeight;
  };
  // The element a click at its centre would hit is it (or inside it): nothing covers it.
  const reachable = (el) => {
    if (!visible(el) || !inViewport(el)) return false;
    const r = el.getBoundingClientRect();
    const x = Math.min(Math.max(r.left + r.width / 2, 1), innerWidth - 1);
    const y = Math.min(Math.max(r.top + Math.min(r.height / 2, 10), 1), innerHeight - 1);
    const hit = document.elementFromPoint(x, y);
    return !!hit && (hit === el || el.contains(hit) || hit.contains(el));
  };
  const describe = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    const cls = (typeof el.className === "string" ? el.className : "").trim().split(/\s+/).filter(Boolean);
    if (cls.length) s += "." + cls.slice(0, 3).join(".");
    const text = (el.getAttribute("aria-label") || el.getAttribute("title") || el.textContent || "").trim();
    return text ? `${s} "${text.replace(/\s+/g, " ").slice(0, 40)}"` : s;
  };
  const until = async (condition, ms) => {
    const t0 = performance.now();
    while (!condition()) {
      if (performance.now() - t0 > ms) return false;
      await new Promise((r) => setTimeout(r, 16));   // a frame; timers, not rAF, run in any tab
    }
    return true;
  };
  const tocLinks = () => [...document.querySelectorAll("nav.bd-docs-nav a, .bd-sidenav a")];
  const pageTocLinks = () => [...document.querySelectorAll("nav.bd-toc-nav a, .page-toc a, #pst-page-toc-nav a")];
  const tocOpen = () => { let n = 0; for (const a of tocLinks()) if (reachable(a) && ++n >= 3) return true; return false; };
  const pageTocOpen = () => pageTocLinks().some(reachable);
  const TABBABLE = "a[href], button, input, select, textarea, summary, iframe, [tabindex], [contenteditable=true]";
  const tabStops = () => [...document.querySelectorAll(TABBABLE)].filter(
    (el) => el.tabIndex >= 0 && !el.disabled && !el.closest("[inert], dialog:not([open])") && visible(el));
  const transparent = (c) => !c || c === "transparent" || /rgba\([^)]*,\s*0\)$/.test(c);

  return {
    // Everything the page loads asynchronously has arrived: MathJax, widgets, fonts.
    async ready(ms) {
      if (document.querySelector('script[src*="mathjax"]')) {
        await until(() => window.MathJax && MathJax.startup && MathJax.startup.promise, ms);
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
      }
      const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
      const rendered = () => views.every((v) => {
        const area = v.previousElementSibling;
        return area && area.classList.contains("widget-subarea") && area.childElementCount > 0;
      });
      await until(rendered, ms);
      await document.fonts.ready;
      return true;
    },
    state() {
      const html = document.documentElement;
      return {
        theme: html.dataset.theme || "",
        mathSource: document.querySelectorAll(".math.notranslate").length,
        mathTypeset: document.querySelectorAll("mjx-container").length,
        widgetViews: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
        widgetsRendered: document.querySelectorAll(".widget-subarea > *").length,
        rawTex: (() => {
          const main = document.querySelector("main") || document.body;
          const clone = main.cloneNode(true);
          clone.querySelectorAll("script, style, mjx-container, .MathJax, pre, code, textarea").forEach((e) => e.remove());
          const text = clone.textContent;
          return ["\\(", "\\[", "$$", "\\begin{"].filter((raw) => text.includes(raw));
        })(),
        favicon: !!document.querySelector('link[rel~="icon"]'),
        // One top bar and one way to search on screen (the theme pair drew two of each on a wide screen).
        searchFields: [...document.querySelectorAll(".search-button-field, .search-button, form.bd-search")]
          .filter(visible).length,
        topBars: [...document.querySelectorAll("#pst-header, .bd-header-article")].filter(visible).length,
      };
    },
    overflow() {
      const width = document.documentElement.clientWidth;
      const scroll = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
      const culprits = [];
      if (scroll > width + 1) {
        for (const el of document.body.querySelectorAll("*")) {
          const r = el.getBoundingClientRect();
          if (r.right <= width + 1 || r.width === 0) continue;
          if (el.closest("mjx-container") && el.tagName.toLowerCase() !== "mjx-container") continue;
          let clipped = false;   // inside a scrolling box, or fixed: does not widen the page
          for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
            const s = getComputedStyle(p);
            if (s.overflowX !== "visible" || s.position === "fixed") { clipped = true; break; }
          }
          if (!clipped && getComputedStyle(el).position !== "fixed") culprits.push(`${describe(el)} (right edge ${Math.round(r.right)} px)`);
        }
      }
      // Report only the outermost culprits: their children stick out with them.
      return {width, scroll, culprits: culprits.slice(0, 8)};
    },
    // Panels side by side (rlhf_course.show_panels): each at 90 % of its own size or more (its 9.5-pt
    // text stays above 8.5 pt), so on a phone they stack; in a column that holds two, two share a line.
    panels() {
      const rows = [...document.querySelectorAll("div.course-panels")].filter(visible);
      const problems = [];
      rows.forEach((row, i) => {
        const imgs = [...row.querySelectorAll("img.course-panel")];
        const rects = imgs.map((img) => img.getBoundingClientRect());
        imgs.forEach((img, k) => {
          if (!img.naturalWidth) problems.push(`row ${i + 1}, panel ${k + 1}: not drawn`);
          else if (rects[k].width < 0.9 * img.naturalWidth)
            problems.push(`row ${i + 1}, panel ${k + 1}: ${Math.round(rects[k].width)} px wide, ` +
                          `${Math.round(100 * rects[k].width / img.naturalWidth)} % of its ${img.naturalWidth} px`);
        });
        const lines = new Set(rects.map((r) => Math.round(r.top))).size;
        const pairs = row.getBoundingClientRect().width >= 2 * 300 + 8;
        if (pairs && lines > Math.ceil(imgs.length / 2))
          problems.push(`row ${i + 1}: ${imgs.length} panels on ${lines} lines in a ` +
                        `${Math.round(row.getBoundingClientRect().width)}-px column that holds two to a line`);
      });
      return {rows: rows.length, problems};
    },
    images() {
      return [...document.querySelectorAll("img")].filter(
        (img) => !(img.getAttribute("alt") || "").trim() && img.getAttribute("role") !== "presentation"
                 && img.getAttribute("aria-hidden") !== "true")
        .map((img) => (img.getAttribute("src") || "").startsWith("data:")
             ? `img (inline ${img.getAttribute("src").slice(5, 14)}) in ${describe(img.closest("section") || img.parentElement)}`
             : `img src=${img.getAttribute("src")}`);
    },
    // Needs one real Tab press first, so that focus moved by script matches :focus-visible as the keyboard's does.
    keyboard() {
      const stops = tabStops();
      // A formula too wide for the column scrolls, and must then be reachable by keyboard (axe:
      // scrollable-region-focusable); any other formula is no Tab stop.
      const scrolls = (el) => el.scrollWidth > el.clientWidth + 1;
      const inMath = stops.filter((el) => el.closest("mjx-container") && !scrolls(el.closest("mjx-container")));
      const noRing = [];
      let checked = 0;
      for (const el of stops) {
        if (el.closest("mjx-container")) continue;
        const before = getComputedStyle(el).boxShadow;
        el.focus({preventScroll: true});
        if (document.activeElement !== el) continue;
        checked += 1;
        // The ring may be drawn on the control or on its icon (the theme rings a <summary>'s chevron).
        const ringed = [el, ...el.children].some((e) => {
          const s = getComputedStyle(e);
          return (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 1 && !transparent(s.outlineColor))
                 || (e === el && s.boxShadow !== "none" && s.boxShadow !== before);
        });
        if (!ringed) noRing.push(describe(el));
      }
      if (document.activeElement) document.activeElement.blur();
      return {stops: stops.length, inMath: inMath.length, checked, noRing: [...new Set(noRing)]};
    },
    // The toggles a reader can see and reach, by kind.
    toggles() {
      const out = {primary: [], secondary: []};
      for (const kind of ["primary", "secondary"]) {
        document.querySelectorAll(`.${kind}-toggle`).forEach((el, i) => {
          if (reachable(el)) {
            const r = el.getBoundingClientRect();
            out[kind].push({index: i, x: r.left + r.width / 2, y: r.top + r.height / 2, label: describe(el)});
          }
        });
      }
      return out;
    },
    // Icon fonts: every icon a reader can see is drawn from a font that loaded (else it shows as a box).
    icons() {
      const loaded = [...document.fonts].filter((f) => f.status === "loaded")
        .map((f) => `${f.family.replace(/["']/g, "")}|${f.weight}`);
      const bad = [];
      for (const el of document.querySelectorAll("i[class*='fa-'], span[class*='fa-']")) {
        if (!visible(el)) continue;
        const before = getComputedStyle(el, "::before");
        if (!before.content || before.content === "none" || before.content === "normal") continue;
        const family = before.fontFamily.split(",")[0].replace(/["']/g, "").trim();
        const weight = String(before.fontWeight);
        if (!loaded.some((f) => f === `${family}|${weight}` || (f.startsWith(family + "|") && weight === "normal")))
          bad.push(`${describe(el)} (${family} ${weight} not loaded)`);
      }
      return [...new Set(bad)];
    },
    tocOpen, pageTocOpen,
    hasPageToc: () => pageTocLinks().length > 0,
    async waitFor(what, want, ms) {
      const test = what === "toc" ? tocOpen : pageTocOpen;
      return until(() => test() === want, ms);
    },
  };
})();
true;
"""


# ------------------------------------------------------------------------------------------- the survey
@dataclass
class Finding:
    page: str
    check: str
    key: str
    where: str = ""      # the (width, scheme) or origin it was seen in

    def known(self) -> str | None:
        for (page, check, key), why in KNOWN.items():
            if check == self.check and fnmatch.fnmatch(self.page, page) and fnmatch.fnmatch(self.key, key):
                return why
        return None

    def __str__(self):
        return f"{self.page} [{self.where}] {self.check}: {self.key}"


@dataclass
class PageReport:
    page: str
    requests: int = 0
    bytes: int = 0
    first_paint_ms: float | None = None
    load_ms: float | None = None
    largest: list = field(default_factory=list)
    axe: dict = field(default_factory=dict)          # rule -> [impact, nodes]
    tab_stops: int = 0
    tab_stops_in_math: int = 0
    math: tuple = (0, 0)
    widgets: tuple = (0, 0)
    loads: int = 0
    combos: list = field(default_factory=list)       # the ways it was loaded (combos_for)


@dataclass
class Survey:
    findings: list[Finding] = field(default_factory=list)
    reports: dict[str, PageReport] = field(default_factory=dict)
    seconds: float = 0.0
    loads: int = 0
    search: dict = field(default_factory=dict)
    browser: str = ""
    panel_rows: dict = field(default_factory=dict)   # width ("375", "1280") -> rows of panels seen

    def unknown(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check and not f.known()]


READY = "window.__probe.ready(20000)"


def _load(tab, url: str, width: int, scheme: str):
    load = tab.load(url, width=width, dark=scheme == "dark")
    tab.evaluate(PROBES)
    tab.evaluate(READY, await_promise=True, timeout=60)
    return load


def _record_load(survey: Survey, page: str, where: str, load) -> None:
    failed_urls = {r.url for r in load.resources.values() if r.failed or (r.status or 0) >= 400}
    for url in sorted(failed_urls):
        survey.findings.append(Finding(page, "failed", url.removeprefix(SITE), where))
    for url in sorted(set(load.external)):
        survey.findings.append(Finding(page, "external", url, where))
    for message in load.console_errors:
        # A failed request's own console line is reported once, as the failed request.
        if message.startswith("network: ") and any(url in message for url in failed_urls):
            continue
        survey.findings.append(Finding(page, "console", message.replace(SITE, ""), where))


def _check_toggles(tab, survey: Survey, page: str, where: str, width: int, thorough: bool = True) -> None:
    toggles = tab.evaluate("window.__probe.toggles()")
    if not toggles["primary"]:
        survey.findings.append(Finding(page, "toggle", "no visible ☰ (primary sidebar toggle)", where))
        return
    first = toggles["primary"][0]
    was_open = tab.evaluate("window.__probe.tocOpen()")
    if width < 992 and was_open:
        survey.findings.append(Finding(page, "toggle", "the table of contents covers the page before ☰ is tapped", where))
    if width >= 992 and not thorough:
        # A wide screen shows the table of contents in the sidebar; hiding it and back is checked in light mode.
        if not was_open:
            survey.findings.append(Finding(page, "toggle", "no table of contents in the sidebar", where))
        return
    (tab.tap if width < 600 else tab.click)(first["x"], first["y"])
    if not tab.evaluate(f"window.__probe.waitFor('toc', {str(not was_open).lower()}, 3000)", await_promise=True):
        survey.findings.append(Finding(
            page, "toggle", f"☰ {first['label']} did not {'hide' if was_open else 'open'} the table of contents", where))
        return
    if not thorough:
        return
    if width < 992:
        # The drawer closes again with Escape, the keyboard's way out.
        tab.press("Escape", "Escape", 27)
        if not tab.evaluate("window.__probe.waitFor('toc', false, 3000)", await_promise=True):
            survey.findings.append(Finding(page, "toggle", "Escape does not close the table of contents", where))
    else:
        # The article header moves left with the sidebar: read where ☰ is once it has stopped moving (two
        # reads 50 ms apart agree), or a click on a busy machine lands where it was mid-transition.
        again = tab.evaluate("""new Promise((resolve) => { const t0 = performance.now(); let last = null;
            (function poll() { const now = window.__probe.toggles().primary;
              const key = JSON.stringify(now.map((b) => [b.x, b.y]));
              if (key === last || performance.now() - t0 > 3000) resolve(now);
              else { last = key; setTimeout(poll, 50); } })(); })""", await_promise=True, timeout=10)
        if not again:
            survey.findings.append(Finding(page, "toggle", "no ☰ left to bring the sidebar back", where))
            return
        tab.click(again[0]["x"], again[0]["y"])
        if not tab.evaluate("window.__probe.waitFor('toc', true, 3000)", await_promise=True):
            survey.findings.append(Finding(page, "toggle", "a second ☰ click does not bring the sidebar back", where))
    # The page-contents button, where the layout shows one instead of the right-hand column.
    toggles = tab.evaluate("window.__probe.toggles()")
    if toggles["secondary"] and tab.evaluate("window.__probe.hasPageToc()"):
        button = toggles["secondary"][0]
        (tab.tap if width < 600 else tab.click)(button["x"], button["y"])
        if not tab.evaluate("window.__probe.waitFor('pagetoc', true, 3000)", await_promise=True):
            survey.findings.append(Finding(page, "toggle", f"{button['label']} did not open the page's contents", where))
        tab.press("Escape", "Escape", 27)


def _check_render(tab, survey: Survey, page: str, where: str, scheme: str, report: PageReport | None = None) -> None:
    """Every load: math typeset, saved widgets drawn, the colour scheme the reader asked for."""
    state = tab.evaluate("window.__probe.state()")
    if report is not None:
        report.math = (state["mathTypeset"], state["mathSource"])
        report.widgets = (state["widgetsRendered"], state["widgetViews"])
    if state["mathTypeset"] < state["mathSource"]:
        survey.findings.append(Finding(page, "math", f"only {state['mathTypeset']} of {state['mathSource']} "
                                                     "formulas typeset", where))
    for raw in state["rawTex"]:
        survey.findings.append(Finding(page, "math", f"raw LaTeX {raw!r} left on the page", where))
    panels = tab.evaluate("window.__probe.panels()")
    survey.panel_rows[where.split()[0]] = survey.panel_rows.get(where.split()[0], 0) + panels["rows"]
    for problem in panels["problems"]:
        survey.findings.append(Finding(page, "panels", problem, where))
    if state["widgetViews"] and state["widgetsRendered"] < state["widgetViews"]:
        survey.findings.append(Finding(page, "widgets", f"{state['widgetsRendered']} of {state['widgetViews']} "
                                                        "saved widgets rendered", where))
    if state["searchFields"] != 1 or state["topBars"] != 1:
        survey.findings.append(Finding(page, "layout", f"{state['topBars']} top bars and {state['searchFields']} search "
                                                       "fields on screen (one of each)", where))
    for icon in tab.evaluate("window.__probe.icons()"):
        survey.findings.append(Finding(page, "icons", icon, where))
    if state["theme"] != scheme:
        survey.findings.append(Finding(page, "theme", f"data-theme is {state['theme']!r}, the reader asked for "
                                                      f"{scheme}", where))


def _once_per_page(tab, survey: Survey, page: str, report: PageReport, axe_source: str) -> None:
    state = tab.evaluate("window.__probe.state()")
    if not state["favicon"]:
        survey.findings.append(Finding(page, "failed", "favicon.ico (the page has no <link rel=icon>, so browsers "
                                                       "ask the server's root for one)", "1280 light"))
    for image in tab.evaluate("window.__probe.images()"):
        survey.findings.append(Finding(page, "alt", image, "1280 light"))
    # Keyboard: one real Tab press, then every tab stop focused in turn.
    tab.press("Tab")
    keyboard = tab.evaluate("window.__probe.keyboard()")
    report.tab_stops, report.tab_stops_in_math = keyboard["stops"], keyboard["inMath"]
    if keyboard["inMath"]:
        survey.findings.append(Finding(page, "keyboard", f"{keyboard['inMath']} of {keyboard['stops']} Tab stops "
                                                         "are formulas", "1280 light"))
    for element in keyboard["noRing"]:
        survey.findings.append(Finding(page, "focus-ring", element, "1280 light"))
    # axe-core, once per page. MathJax's drawn glyphs (mjx-math: aria-hidden, not focusable, coloured as the
    # text around them) are taken out first: they are two thirds of a math-heavy page's elements and most of
    # axe's time. What a screen reader reads of a formula (mjx-assistive-mml) stays.
    tab.evaluate("document.querySelectorAll('mjx-container > mjx-math[aria-hidden=\"true\"]').forEach((m) => m.remove())")
    if not tab.evaluate("typeof axe !== 'undefined'"):
        tab.evaluate(axe_source)
    violations = tab.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => "
        "({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5), n: v.nodes.length})))",
        await_promise=True, timeout=120)
    for v in violations:
        report.axe[v["id"]] = [v["impact"], v["n"], v["nodes"]]
        if v["impact"] in BLOCKING_IMPACTS:
            survey.findings.append(Finding(page, "axe", v["id"], f"1280 light: {v['impact']}, {v['n']} × "
                                                                 f"{'; '.join(v['nodes'][:2])}"))


# The four ways a page is loaded; the last opens it from the folder, as a reader who double-clicks it does
# (file:// has failures of its own: fetch() and fonts are cross-origin there). The browser's cache is on, as
# a reader's is from the second page on: the report's bytes are the sizes of every file the page requests,
# cached or not, and its first paint is a reader's second page's.
COMBOS = [(1280, "light", "http"), (1280, "dark", "http"), (375, "light", "http"), (375, "dark", "file")]


def combos_for(index: int, html_text: str) -> list[tuple[int, str, str]]:
    """The ways page number ``index`` of PAGES is loaded (its built HTML is ``html_text``).

    The first is always 1280 px light, the load the once-per-page checks (axe, Tab stops) run on. Widget
    pages, whose saved widgets and their fonts fail in ways of their own (file:// above all), get every way;
    the other pages share the rest: the four ways cost a quarter of the suite's CPU, and a theme or layout
    fault on one plain page shows on its neighbours too."""
    if "application/vnd.jupyter.widget-view+json" in html_text:
        return list(COMBOS)
    return [COMBOS[0], *([COMBOS[1]] if index % 3 == 0 else []), COMBOS[2] if index % 2 == 0 else COMBOS[3]]


WORKERS = int(os.environ.get("BROWSER_TABS", "2"))   # pages loaded side by side, one tab each


def _survey_page(tab, survey: Survey, html: Path, page: str, artifacts: Path | None, axe_source: str) -> None:
    report = survey.reports[page] = PageReport(page)
    report.combos = combos_for(PAGES.index(page) if page in PAGES else 0, (html / page).read_text(errors="replace"))
    for n, (width, scheme, origin) in enumerate(report.combos):
        where = f"{width} {scheme}" + (" file://" if origin == "file" else "")
        url = SITE + page if origin == "http" else (html / page).as_uri()
        # Nothing in localStorage, as on a first visit (the theme keeps its mode there).
        tab.send("Storage.clearDataForOrigin", {"origin": SITE.rstrip("/") if origin == "http" else "file://",
                                                "storageTypes": "local_storage"})
        load = _load(tab, url, width, scheme)
        report.loads += 1
        _record_load(survey, page, where, load)
        _check_render(tab, survey, page, where, scheme, report if n == 0 else None)
        if n == 0:
            report.requests, report.bytes = load.requests, load.bytes
            report.first_paint_ms, report.load_ms = load.first_paint_ms, round(load.load_ms or 0)
            sizes: dict[str, int] = {}
            for r in load.resources.values():
                if not r.url.startswith("data:"):
                    sizes[r.url.removeprefix(SITE)] = max(sizes.get(r.url.removeprefix(SITE), 0), r.bytes)
            report.largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
            if artifacts and page.startswith("book/"):
                tab.screenshot(artifacts / "browser" / (page.removesuffix(".html").replace("/", "__") + ".jpg"),
                               full_page=False)
            _once_per_page(tab, survey, page, report, axe_source)   # last: it takes the math's glyphs out
        if width < 600:
            over = tab.evaluate("window.__probe.overflow()")
            if over["scroll"] > over["width"] + 1:
                for culprit in over["culprits"] or [f"page {over['scroll']} px wide"]:
                    survey.findings.append(Finding(page, "overflow", culprit, where))
        _check_toggles(tab, survey, page, where, width, thorough=scheme == "light")
        if artifacts and width < 600 and scheme == "light" and page == PAGES[0]:
            toggle = tab.evaluate("window.__probe.toggles()")["primary"]
            if toggle:
                tab.tap(toggle[0]["x"], toggle[0]["y"])
                tab.evaluate("window.__probe.waitFor('toc', true, 3000)", await_promise=True)
                tab.screenshot(artifacts / "browser" / "toc_open_375.jpg", full_page=False)


def run_survey(html: Path, pages: list[str], artifacts: Path | None = None, workers: int = WORKERS) -> Survey:
    """Drive every page in every combination; WORKERS tabs of one Chromium share the pages."""
    survey = Survey()
    axe_source = AXE.read_text()
    started = time.monotonic()
    todo = list(pages)
    errors: list[BaseException] = []

    def worker(tab):
        while todo and not errors:
            page = todo.pop(0)
            try:
                _survey_page(tab, survey, html, page, artifacts, axe_source)
            except BaseException as error:   # noqa: BLE001 — re-raised below, in the test's thread
                errors.append(BrowserError(f"{page}: {error!r}"))

    with Browser() as browser:
        survey.browser = browser.version
        tabs = [browser.new_tab(site_root=html) for _ in range(max(1, workers))]
        threads = [threading.Thread(target=worker, args=(tab,)) for tab in tabs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        survey.search = _search(tabs[0])
    survey.reports = {page: survey.reports[page] for page in pages}   # in the book's order
    survey.loads = sum(report.loads for report in survey.reports.values())
    survey.seconds = time.monotonic() - started
    return survey


SEARCH_QUERIES = ("advantage", "Binder", "clip")
RAW_TEX = re.compile(r"\\[()\[\]]|\\(?:frac|hat|bar|sum|mathbb|mathrm|text|begin|end|left|right)(?![a-zA-Z])|\$\$")


def _search(tab) -> dict:
    """Run a few searches; return query -> [(title, snippet)] and the problems seen."""
    out = {"results": {}, "problems": []}
    for query in SEARCH_QUERIES:
        load = _load(tab, f"{SITE}search.html?q={query}", 1280, "light")
        # Done when Sphinx says so and every result has its snippet (each is fetched from its page).
        done = tab.evaluate("""new Promise((resolve) => { const t0 = performance.now(); (function poll() {
            const status = document.querySelector('#search-results .search-summary');
            const items = [...document.querySelectorAll('#search-results li')];
            const finished = status && /finished|did not match/i.test(status.textContent)
                             && items.every((li) => li.querySelector('p.context'));
            if (finished || performance.now() - t0 > 20000) resolve(!!finished); else setTimeout(poll, 20); })(); })""",
                            await_promise=True, timeout=60)
        # Snippets typeset their math after they appear (theme-fixes.js).
        tab.evaluate("window.bookSearchTypeset ? window.bookSearchTypeset().then(() => true) : true",
                     await_promise=True, timeout=60)
        # Each snippet, its math set aside, must be text of the page's article (the page itself, fetched and
        # parsed here: <article> holds the content, not the buttons, contents list or navigation around it).
        results = tab.evaluate("""Promise.all([...document.querySelectorAll('#search-results li')].map(async (li) => {
            const link = li.querySelector('a');
            const p = li.querySelector('p.context');
            let text = '', outside = [];
            if (p) {
                const c = p.cloneNode(true);
                c.querySelectorAll('mjx-container').forEach((m) => m.replaceWith(' \u27e8math\u27e9 '));
                text = c.textContent.replace(/\\s+/g, ' ').trim();
                const page = new DOMParser().parseFromString(await (await fetch(link.href.split('#')[0])).text(), 'text/html');
                const article = page.querySelector('article') || page.body;
                article.querySelectorAll('.math, .headerlink, script, style').forEach((m) => m.replaceWith(' '));
                const flat = (t) => t.replace(/\\s+/g, '');   // compared without whitespace: blocks join either way
                const body = flat(article.textContent);
                outside = text.replace(/^… |… $|…/g, ' ').split('\u27e8math\u27e9').map(flat)
                    .filter((piece) => piece.length > 3 && !body.includes(piece));
            }
            return [link ? link.textContent.trim() : '?', text, outside]; }))""", await_promise=True, timeout=60)
        out["results"][query] = [(title, snippet) for title, snippet, _ in results]
        for message in load.console_errors:
            out["problems"].append(f"search {query!r}: console: {message}")
        if not done or not results:
            out["problems"].append(f"search {query!r}: no results, or snippets missing")
        for title, snippet, outside in results:
            if not snippet:
                out["problems"].append(f"search {query!r}, {title}: empty snippet")
            if RAW_TEX.search(snippet):
                out["problems"].append(f"search {query!r}, {title}: raw TeX in the snippet: {snippet[:160]}")
            for piece in outside:
                out["problems"].append(f"search {query!r}, {title}: snippet text not in the page's article: {piece[:120]!r}")
    return out


# ------------------------------------------------------------------------------------------- the report
def write_report(survey: Survey, artifacts: Path) -> None:
    rows = []
    for page, r in survey.reports.items():
        blocking = sorted(rule for rule, (impact, *_rest) in r.axe.items() if impact in BLOCKING_IMPACTS)
        rows.append(dict(page=page, requests=r.requests, kib=round(r.bytes / 1024), first_paint_ms=r.first_paint_ms,
                         load_ms=r.load_ms, tab_stops=r.tab_stops, tab_stops_in_math=r.tab_stops_in_math,
                         math=f"{r.math[0]}/{r.math[1]}", widgets=f"{r.widgets[0]}/{r.widgets[1]}",
                         axe_blocking=blocking, axe_all={k: v[:2] for k, v in r.axe.items()}, largest=r.largest))
    data = dict(browser=survey.browser, seconds=round(survey.seconds, 1), loads=survey.loads, pages=rows,
                findings=[dict(page=f.page, where=f.where, check=f.check, key=f.key, known=f.known()) for f in survey.findings],
                search=survey.search)
    (artifacts / "browser_report.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    lines = [f"# The book in a browser ({survey.browser}; {survey.loads} page loads in {survey.seconds:.0f} s)", "",
             "At 1280 px, light: the files a page requests (cached or not) and their bytes; first contentful "
             "paint and load event with the book's common files in the browser's cache.", "",
             "| page | requests | KiB | first paint (ms) | load (ms) | Tab stops (in math) | math typeset | "
             "widgets | axe serious/critical |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['page']} | {row['requests']} | {row['kib']} | {row['first_paint_ms']} | {row['load_ms']} "
                     f"| {row['tab_stops']} ({row['tab_stops_in_math']}) | {row['math']} | {row['widgets']} "
                     f"| {', '.join(row['axe_blocking']) or '—'} |")
    total = sum(r["kib"] for r in rows)
    lines += ["", f"Total {total / 1024:.1f} MiB over {len(rows)} pages "
                  f"(mean {total / max(1, len(rows)) / 1024:.2f} MiB a page).", "", "## Findings", ""]
    for f in survey.findings:
        why = f.known()
        lines.append(f"- {'KNOWN ' if why else ''}{f}" + (f" — {why}" if why else ""))
    if not survey.findings:
        lines.append("None.")
    lines += ["", "## Search snippets", ""]
    for query, results in survey.search.get("results", {}).items():
        lines.append(f"- **{query}**: " + " · ".join(f"{t}: “{s[:100]}”" for t, s in results[:3]))
    lines += [f"- problem: {p}" for p in survey.search.get("problems", [])]
    (artifacts / "browser_report.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- fixtures
def _built_html() -> Path:
    """The book to test: $BOOK_HTML (an already built _build/html, to iterate on this file), else the build that
    conftest starts in the background at collection."""
    if os.environ.get("BOOK_HTML"):
        return Path(os.environ["BOOK_HTML"]).resolve()
    return built_book()


def _survey_the_book(artifacts: Path) -> Survey:
    html = _built_html()
    (artifacts / "browser").mkdir(parents=True, exist_ok=True)
    result = run_survey(html, PAGES, artifacts)
    write_report(result, artifacts)
    return result


_EARLY: dict = {}


def start_in_background(artifacts: Path) -> None:
    """Survey the book in a thread as soon as the background build has finished, while the rest of the suite
    runs (conftest calls this at collection). The survey is Chromium's work in other processes; this thread
    mostly waits on their pipe, so it takes the core the book build used, not the foreground tests'."""
    def job():
        try:
            _EARLY["survey"] = _survey_the_book(artifacts)
        except BaseException as error:   # noqa: BLE001 — re-raised by the fixture, in the test's thread
            _EARLY["error"] = error

    _EARLY["thread"] = threading.Thread(target=job, name="browser-survey", daemon=True)
    _EARLY["thread"].start()


@pytest.fixture(scope="module")
def survey(artifacts) -> Survey:
    if "thread" not in _EARLY:          # not started at collection: survey now
        return _survey_the_book(artifacts)
    _EARLY["thread"].join()
    if "error" in _EARLY:
        raise _EARLY["error"]
    return _EARLY["survey"]


def _fail_on(survey: Survey, check: str, what: str):
    bad = survey.unknown(check)
    assert not bad, f"{len(bad)} {what} (test-artifacts/browser_report.md has them all):\n" + \
        "\n".join(f"  {f}" for f in bad[:40])


# ------------------------------------------------------------------------------------------- the checks
def test_every_page_was_driven(survey):
    assert set(survey.reports) == set(PAGES)
    assert {(w, s) for w, s, _ in COMBOS} == {(w, s) for w in WIDTHS for s in SCHEMES}
    reports = survey.reports.values()
    assert survey.loads == sum(len(r.combos) for r in reports) and all(r.loads == len(r.combos) for r in reports)
    for r in reports:
        assert r.combos[0] == COMBOS[0], f"{r.page}: the once-per-page checks need the 1280 px light load first"
        assert {w for w, _, _ in r.combos} == set(WIDTHS), f"{r.page} was not loaded at both widths"
        if r.widgets[1]:
            assert r.combos == COMBOS, f"{r.page} has widgets and was not loaded every way"
    for combo in COMBOS:
        used = sum(combo in r.combos for r in reports)
        assert used >= len(PAGES) / 3, f"{combo} was used on {used} of {len(PAGES)} pages"


def test_the_hamburger_opens_the_table_of_contents(survey):
    _fail_on(survey, "toggle", "pages where ☰ or the page-contents button does not work")


def test_no_console_errors(survey):
    _fail_on(survey, "console", "console errors")


def test_no_failed_requests(survey):
    _fail_on(survey, "failed", "failed requests")


def test_nothing_is_loaded_from_outside_the_book(survey):
    _fail_on(survey, "external", "requests that leave the book")


def test_dark_mode_follows_the_reader(survey):
    _fail_on(survey, "theme", "pages whose colour scheme ignores the reader's")


def test_no_horizontal_overflow_at_375px(survey):
    _fail_on(survey, "overflow", "elements wider than a 375 px phone")


def test_panels_keep_their_size_stacking_on_a_phone_and_pairing_on_a_desktop(survey):
    assert survey.panel_rows.get("375") and survey.panel_rows.get("1280"), survey.panel_rows   # seen at both
    _fail_on(survey, "panels", "rows of panels shrunk or not paired")


def test_axe_finds_no_serious_or_critical_violation(survey):
    _fail_on(survey, "axe", "serious or critical axe-core violations")


def test_every_image_has_alt_text(survey):
    _fail_on(survey, "alt", "images without alt text")


def test_formulas_are_not_tab_stops_and_every_control_shows_focus(survey):
    _fail_on(survey, "keyboard", "pages where formulas are Tab stops")
    _fail_on(survey, "focus-ring", "controls without a visible focus ring")


def test_one_top_bar_and_one_search_field(survey):
    _fail_on(survey, "layout", "pages with a second top bar or search field")


def test_every_icon_is_drawn(survey):
    _fail_on(survey, "icons", "icons whose font did not load (they show as empty boxes)")


def test_math_typeset_and_widgets_rendered(survey):
    _fail_on(survey, "math", "pages with untypeset math")
    _fail_on(survey, "widgets", "pages whose saved widgets did not render")


def test_search_snippets_are_the_sections_text(survey):
    assert survey.search["results"], "the search page returned nothing"
    assert not survey.search["problems"], "\n".join(survey.search["problems"][:20])


def test_report_lands_in_test_artifacts(survey, artifacts):
    data = json.loads((artifacts / "browser_report.json").read_text())
    assert len(data["pages"]) == len(PAGES)
    assert all(row["requests"] > 0 and row["kib"] > 0 and row["first_paint_ms"] for row in data["pages"]), \
        "a page without requests, bytes or a first paint in the report"
    shots = list((artifacts / "browser").glob("*.jpg"))
    assert len(shots) >= sum(p.startswith("book/") for p in PAGES), "screenshots missing"


def test_known_exceptions_are_still_needed(survey):
    used = {key for f in survey.findings for key, why in KNOWN.items()
            if f.check == key[1] and fnmatch.fnmatch(f.page, key[0]) and fnmatch.fnmatch(f.key, key[2])}
    stale = [key for key in KNOWN if key not in used]
    assert not stale, f"these KNOWN exceptions match nothing any more: remove them from the dict: {stale}"


# ------------------------------------------------------------------------------------------- can it fail?
BROKEN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>broken</title>
<link rel="icon" href="data:,">
<script src="missing.js"></script>
<script>const X = 1;</script><script>const X = 2;</script>
<script src="https://cdn.example.com/lib.js"></script>
<style>.fa-nofont::before { content: "\\f0c9"; font-family: "No Such Font"; }</style>
</head><body><header id="pst-header">a second top bar <button class="search-button-field">Search</button></header>
<div class="bd-header-article">the article's bar <button class="search-button">Search</button></div>
<main><h1>broken</h1><i class="fa-solid fa-nofont"></i>
<mjx-container tabindex="0">x</mjx-container>
<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==">
<div style="width: 900px">too wide</div>
<div class="course-panels"><img class="course-panel" alt="a" style="width: 150px" src="data:image/svg+xml;base64,{svg}"><img class="course-panel" alt="b" style="width: 150px" src="data:image/svg+xml;base64,{svg}"></div>
<button class="primary-toggle" style="outline: none">☰</button>
<p>\\(x^2\\)</p>
</main></body></html>"""


def test_the_browser_checks_can_fail(tmp_path):
    """A page with each fault the survey looks for is reported with each of them."""
    site = tmp_path / "site"
    site.mkdir()
    import base64

    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" width="326" height="300"></svg>').decode()
    (site / "broken.html").write_text(BROKEN_PAGE.replace("{svg}", svg))
    survey = Survey()
    with Browser() as browser:
        tab = browser.new_tab(site_root=site)
        load = _load(tab, SITE + "broken.html", 375, "light")
        _record_load(survey, "broken.html", "375 light", load)
        over = tab.evaluate("window.__probe.overflow()")
        _check_toggles(tab, survey, "broken.html", "375 light", 375)
        report = PageReport("broken.html")
        _check_render(tab, survey, "broken.html", "375 light", "dark", report)
        _once_per_page(tab, survey, "broken.html", report, AXE.read_text())
    checks = {f.check for f in survey.findings}
    assert any("missing.js" in f.key for f in survey.findings if f.check == "failed"), survey.findings
    assert any("already been declared" in f.key for f in survey.findings if f.check == "console"), survey.findings
    assert any("cdn.example.com" in f.key for f in survey.findings if f.check == "external"), survey.findings
    assert over["scroll"] > over["width"] and over["culprits"], over
    assert {"toggle", "alt", "axe", "math", "focus-ring", "theme", "layout", "icons", "keyboard", "panels"} <= checks, \
        checks
    assert any("150 px wide, 46 % of its 326 px" in f.key for f in survey.findings if f.check == "panels")
    assert "image-alt" in report.axe


def test_the_search_check_can_fail():
    assert RAW_TEX.search(r"where \(\bar R\) is the batch mean") and RAW_TEX.search(r"a \frac1N b")
    assert not RAW_TEX.search("where ⟨math⟩ is the batch mean")
