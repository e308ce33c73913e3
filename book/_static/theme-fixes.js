// Fixes for sphinx-book-theme 1.3.0 + pydata-sphinx-theme 0.17.1 (on Sphinx 7.4) as readers meet them
// (issue 10). Wired in through `html_js_files` in _config.yml with a priority that puts it before every other
// script of <head> (parts 0 and 1 must run before the parser reaches the rest); theme-fixes.css is its other
// half. tests/test_book_browser.py checks each fix in a real browser.
(function () {
  "use strict";

  // 0. Every inline script runs once. Sphinx 7.4 emits the inline scripts that extensions add after the
  //    builder starts twice (its registry re-adds them as filename "" next to the builder's filename None),
  //    and sphinx-thebe's is `const THEBE_JS_URL = ...`: "Identifier 'THEBE_JS_URL' has already been
  //    declared" on every page. The parser hands each new <script> to this observer (a microtask checkpoint)
  //    before running it; a copy of an earlier inline script is taken out, and a script that is no longer in
  //    the document never runs.
  //    Only JavaScript: a widget's view (<script type="application/vnd.jupyter.widget-view+json">) may be
  //    shown twice on purpose.
  var seen = new Set();
  var isInlineJs = function (node) {
    return node.nodeName === "SCRIPT" && !node.src && /^(|text\/javascript|module)$/i.test(node.type)
      && node.textContent.trim() !== "";
  };
  var observer = new MutationObserver(function (records) {
    records.forEach(function (record) {
      record.addedNodes.forEach(function (node) {
        if (!isInlineJs(node)) return;
        var text = node.textContent.trim();
        if (seen.has(text)) node.remove();
        else seen.add(text);
      });
    });
  });
  document.querySelectorAll("script").forEach(function (s) { if (isInlineJs(s)) seen.add(s.textContent.trim()); });
  observer.observe(document.documentElement, { childList: true, subtree: true });
  document.addEventListener("DOMContentLoaded", function () { observer.disconnect(); });

  // 1. The colour scheme, before the first paint. With `default_mode: auto` the theme's head script leaves
  //    data-theme="auto" (no such theme) until its deferred JavaScript runs: resolve it now from the reader's
  //    system setting, as the theme itself will.
  var root = document.documentElement;
  if (root.dataset.theme !== "light" && root.dataset.theme !== "dark") {
    root.dataset.theme = window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  // 2. Every ☰ and page-contents button works. Both themes bind their handlers to the FIRST .primary-toggle
  //    (and .secondary-toggle) of the page, a button in a header bar that is never shown; the ones a reader
  //    sees (in the article's header) did nothing at any width. Each visible one now clicks the wired one, so
  //    the themes' own behaviour runs: the drawer (<dialog>) on narrow screens, the sidebar hides and comes
  //    back on wide ones.
  function wireToggles() {
    ["primary", "secondary"].forEach(function (kind) {
      var toggles = document.querySelectorAll("." + kind + "-toggle");
      var wired = toggles[0];
      Array.prototype.slice.call(toggles, 1).forEach(function (toggle) {
        toggle.addEventListener("click", function (event) {
          event.preventDefault();
          event.stopPropagation();
          wired.click();
        });
      });
    });
  }

  // 3. Accessible names that match what is on screen (axe: label-content-name-mismatch, summary-name), and
  //    icons that screen readers skip.
  function nameControls() {
    // "Search Ctrl+K" on screen, "Search" to a screen reader: let the button's text be its name.
    document.querySelectorAll(".search-button-field[aria-label]").forEach(function (button) {
      button.removeAttribute("aria-label");
    });
    // The colour-mode button shows one of three icons whose titles ("Light", "Dark", "System Settings")
    // are not its name; the icons are decoration, the button's label says what it does.
    document.querySelectorAll(".theme-switch-button .theme-switch").forEach(function (icon) {
      icon.removeAttribute("title");
    });
    // The table of contents' expanders: a <summary> holding only a chevron icon.
    document.querySelectorAll(".bd-sidenav details > summary").forEach(function (summary) {
      var link = summary.parentElement.parentElement.querySelector(":scope > a");
      if (!summary.getAttribute("aria-label") && link) {
        summary.setAttribute("aria-label", "Sections of " + link.textContent.trim());
      }
    });
    // myst-nb's hidden-cell bars read "Show code cell source" but are named "Toggle hidden content".
    document.querySelectorAll("summary[aria-label='Toggle hidden content']").forEach(function (summary) {
      if (summary.textContent.trim()) summary.removeAttribute("aria-label");
    });
    // docutils marks each entry of a reference list role="doc-biblioentry" (deprecated in DPUB-ARIA 1.1) inside
    // role="list": a list whose items are not list items (axe: aria-required-children).
    document.querySelectorAll('[role="list"] > [role="doc-biblioentry"]').forEach(function (entry) {
      entry.setAttribute("role", "listitem");
    });
    document.querySelectorAll("i[class*='fa-'], span[class*='fa-']").forEach(function (icon) {
      if (!icon.textContent.trim()) icon.setAttribute("aria-hidden", "true");
    });
  }

  // 4. Search snippets are the text of the section found: without the page's buttons ("Binder", "Colab",
  //    "Download"), its contents list and its navigation, and with the math typeset rather than raw TeX
  //    (\(\hat A_t\)). Sphinx 7.4's searchtools.js takes the whole [role=main] text and cuts 240 characters
  //    around a keyword, wherever that leaves a formula.
  var CHROME = [".headerlink", "script", "style", ".bd-header-article", ".header-article-items",
    ".article-header-buttons", ".bd-sidebar-secondary", ".prev-next-area", ".prev-next-footer",
    ".bd-footer-article", ".d-print-none", "nav", "dialog", ".widget-subarea", ".copybtn", ".eqno",
    "mjx-container", ".MathJax"];
  var MATH = /\\\(.+?\\\)|\\\[.+?\\\]|\$\$.+?\$\$/g;
  var typesetting = Promise.resolve();
  window.bookSearchTypeset = function () { return typesetting; };

  function loadMathJax() {
    if (window.MathJax && window.MathJax.typesetPromise) return Promise.resolve();
    if (!loadMathJax.promise) {
      loadMathJax.promise = new Promise(function (resolve, reject) {
        window.MathJax = {
          startup: { typeset: false, pageReady: function () { resolve(); return Promise.resolve(); } },
          options: { processHtmlClass: "math", menuOptions: { settings: { inTabOrder: false } } },
        };
        var script = document.createElement("script");
        // The vendored MathJax (`mathjax_path` in _config.yml), from the site's root.
        script.src = (root.dataset.content_root || "./") + "_static/vendor/mathjax/tex-mml-chtml.js";
        script.defer = true;
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return loadMathJax.promise;
  }

  function snippet(text, keywords) {
    var lower = text.toLowerCase();
    var hits = keywords.map(function (k) { return lower.indexOf(String(k).toLowerCase()); })
      .filter(function (i) { return i > -1; });
    var hit = hits.length ? Math.min.apply(null, hits) : 0;
    var start = Math.max(0, hit - 100), end = Math.min(text.length, start + 260);
    // Start and end on word boundaries ...
    if (start > 0) {
      var space = text.indexOf(" ", start);
      if (space > -1 && space < hit) start = space + 1;
    }
    if (end < text.length) {
      var back = text.lastIndexOf(" ", end);
      if (back > hit) end = back;
    }
    // ... and never cut a formula in two: widen the window to whole formulas.
    var match;
    MATH.lastIndex = 0;
    while ((match = MATH.exec(text))) {
      var a = match.index, b = match.index + match[0].length;
      if (a < start && b > start) start = a;
      if (a < end && b > end) end = b;
    }
    return (start > 0 ? "… " : "") + text.slice(start, end).trim() + (end < text.length ? " …" : "");
  }

  function patchSearch() {
    if (typeof Search === "undefined" || !Search.makeSearchSummary) return;
    Search.htmlToText = function (htmlString, anchor) {
      var doc = new DOMParser().parseFromString(htmlString, "text/html");
      var main = doc.querySelector('[role="main"]');
      if (!main) return "";
      CHROME.forEach(function (selector) {
        main.querySelectorAll(selector).forEach(function (el) { el.remove(); });
      });
      var block = (anchor && main.querySelector(anchor)) || main.querySelector("article") || main;
      if (block.tagName === "DT") {
        // A glossary term: its text is its definition.
        var entry = doc.createElement("div");
        for (var el = block.nextElementSibling; el && el.tagName === "DD"; el = el.nextElementSibling) {
          entry.appendChild(el.cloneNode(true));
        }
        block = entry;
      }
      // The page's title, and the section's own heading, are the result's title already.
      block.querySelectorAll("h1").forEach(function (h) { h.remove(); });
      var heading = block.querySelector("h2, h3, h4, h5, h6");
      if (anchor && heading && heading.parentElement === block) heading.remove();
      // Blocks end in a space, so that a term and its definition, or two paragraphs, do not run together.
      block.querySelectorAll("p, li, dt, dd, div, section, h2, h3, h4, h5, h6, td, th, pre, figcaption, br")
        .forEach(function (el) { el.after(" "); });
      return block.textContent.replace(/\s+/g, " ").trim();
    };
    Search.makeSearchSummary = function (htmlText, keywords, anchor) {
      var text = Search.htmlToText(htmlText, anchor);
      if (!text) return null;
      var summary = document.createElement("p");
      summary.classList.add("context");
      var piece = snippet(text, Array.from(keywords)), last = 0, match, hasMath = false;
      MATH.lastIndex = 0;
      while ((match = MATH.exec(piece))) {
        summary.appendChild(document.createTextNode(piece.slice(last, match.index)));
        var math = summary.appendChild(document.createElement("span"));
        math.className = "math notranslate nohighlight";   // nohighlight: sphinx_highlight.js leaves TeX alone
        math.textContent = match[0];
        last = match.index + match[0].length;
        hasMath = true;
      }
      summary.appendChild(document.createTextNode(piece.slice(last)));
      if (hasMath) {
        typesetting = typesetting.then(loadMathJax).then(function () {
          return window.MathJax.typesetPromise([summary]);
        }).catch(function (error) { console.warn("search snippet math:", error); });
      }
      return summary;
    };
  }

  // 5. Formulas are not Tab stops (mathjax3_config in _config.yml), except a display formula too wide for the
  //    column: it scrolls sideways (readable.css), and a keyboard can only scroll what it can focus.
  function focusWideFormulas() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(function (math) {
      if (math.scrollWidth > math.clientWidth + 1) {
        math.tabIndex = 0;
        if (!math.hasAttribute("role")) math.setAttribute("role", "group");
        if (!math.hasAttribute("aria-label")) math.setAttribute("aria-label", "formula (scrolls sideways)");
      } else if (math.getAttribute("role") === "group") {
        math.removeAttribute("tabindex");
        math.removeAttribute("role");
        math.removeAttribute("aria-label");
      }
    });
  }
  function afterMath() {
    var startup = window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
    if (startup) startup.then(focusWideFormulas);
    var timer;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(focusWideFormulas, 200);
    });
  }

  function ready() {
    wireToggles();
    nameControls();
    patchSearch();
  }
  window.addEventListener("load", afterMath);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
