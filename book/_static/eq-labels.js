// Show the label of every labelled equation (eq-ppo-clip, eq-rlhf-k1, ...) next to its number, so that a
// label cited in an exercise's docstring can be found on the page (and with the browser's find).
// Sphinx writes such an equation as <div class="math" id="equation-LABEL"><span class="eqno">(n)...</span>.
// Wired in through `html_js_files` in _config.yml; styled by print.css (.eqlabel).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll('div.math[id^="equation-eq-"] > span.eqno').forEach(function (eqno) {
    if (eqno.querySelector(".eqlabel")) return;
    var label = document.createElement("span");
    label.className = "eqlabel";
    label.textContent = eqno.parentElement.id.slice("equation-".length);
    label.title = "label of this equation, as cited in the exercises";
    eqno.insertBefore(label, eqno.firstChild);
  });
});
