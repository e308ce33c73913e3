// Accessible names for the ipywidgets controls that @jupyter-widgets/html-manager renders from a page's saved
// widget state. The manager shows a slider's description as a separate <label> that names nothing, so the
// slider handle (role="slider") has no accessible name; here it gets the description as its aria-label, and a
// row of toggle buttons becomes a group named by its description. Loaded only on pages with widgets
// (nb_ipywidgets_js in _config.yml); widgets render after the page loads, so new ones are watched for.
(function () {
  "use strict";

  function description(widget) {
    var label = widget.querySelector(":scope > .widget-label");
    return label ? label.textContent.trim() : "";
  }

  function nameControls(root) {
    root.querySelectorAll(".widget-slider").forEach(function (widget) {
      var text = description(widget);
      widget.querySelectorAll('[role="slider"]').forEach(function (handle) {
        if (text && handle.getAttribute("aria-label") !== text) handle.setAttribute("aria-label", text);
      });
      var readout = widget.querySelector(".widget-readout");
      if (text && readout && !readout.hasAttribute("aria-label")) readout.setAttribute("aria-label", text + " value");
    });
    root.querySelectorAll(".widget-toggle-buttons").forEach(function (widget) {
      var text = description(widget);
      if (text && widget.getAttribute("aria-label") !== text) {
        widget.setAttribute("role", "group");
        widget.setAttribute("aria-label", text);
      }
    });
  }

  function start() {
    nameControls(document);
    new MutationObserver(function () { nameControls(document); })
      .observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
