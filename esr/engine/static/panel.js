// ESR's panel in Locust's web UI: the run in progress or last ended, and a link to its
// report card once built. Outside Locust's React tree, so neither disturbs the other.
(function () {
  "use strict";
  var base = document.currentScript.src.replace(/\/esr\/panel\.js.*$/, "");
  var panel = document.createElement("aside");
  panel.id = "esr-panel";
  panel.setAttribute("style", "position:fixed;right:16px;bottom:16px;z-index:2000;" +
    "padding:8px 12px;border-radius:6px;background:#1f3a5f;color:#fff;" +
    "font:13px/1.4 sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.3);max-width:28em");
  var text = document.createElement("span");
  var link = document.createElement("a");
  link.id = "esr-report-link";
  link.textContent = "Open the report card";
  link.target = "_blank";
  link.rel = "noopener";
  link.setAttribute("style", "color:#9fd3ff;margin-left:8px;display:none");
  panel.appendChild(text);
  panel.appendChild(link);

  function describe(s) {
    if (!s.run_id) return "ESR: start a run; outcomes by cohort are in the ESR citizens tab.";
    var outcomes = Object.keys(s.outcomes).sort().map(function (k) {
      return k + " " + s.outcomes[k];
    }).join(", ");
    var where = s.report === "running" ? (s.phase || "starting") + ", " + s.citizens +
      " citizens" : "report card " + s.report;
    return "ESR run " + s.run_id + " (" + where + "): " + s.requests + " requests" +
      (outcomes ? "; " + outcomes : "");
  }

  function refresh() {
    fetch(base + "/esr/status", {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        text.textContent = describe(s);
        var ready = s.report === "ready";
        link.href = ready ? base + "/esr/runs/" + s.run_id + "/report.html" : "#";
        link.style.display = ready ? "inline" : "none";
      })
      .catch(function () {});
  }

  document.body.appendChild(panel);
  refresh();
  setInterval(refresh, 2000);
})();
