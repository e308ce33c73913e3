// Replaces pydata-sphinx-theme's _static/scripts/fontawesome.js (Sphinx copies html_static_path over the
// theme's static files). The theme's file is Font Awesome's whole SVG+JS framework, 1.49 MB on every page,
// which turns each <i class="fa-..."> into an inline <svg>. The theme's stylesheet already carries Font
// Awesome's CSS and @font-face rules (webfonts in _static/vendor/fontawesome/), which draw the same icons
// from the fonts; the SVG framework is only needed for custom icon_links, which this book has none of
// (issue 10, item 8). tests/test_book_browser.py checks that the icons still render.
