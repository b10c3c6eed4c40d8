/* gradlog report: draw the figures (JSON blocks of type application/json), link findings to
   their charts, sort tables. Data is parsed with JSON.parse and never evaluated. */
(function () {
  "use strict";
  var state = { charts: {}, errors: [] };
  window.gradlogReport = state;

  function draw() {
    var blocks = document.querySelectorAll("script.figure[type='application/json']");
    blocks.forEach(function (el) {
      var target = document.getElementById(el.getAttribute("data-target"));
      if (!target) { return; }
      try {
        var fig = JSON.parse(el.textContent);
        var shapes = (fig.layout.shapes || []).slice();
        state.charts[target.id] = { shapes: shapes, traces: fig.data.length };
        Plotly.newPlot(target, fig.data, fig.layout,
          { responsive: true, displaylogo: false, scrollZoom: false });
      } catch (e) {
        state.errors.push(String(e));
        target.textContent = "This chart could not be drawn: " + e;
      }
    });
    state.ready = true;
  }

  /* A chart with view buttons (e.g. over time / per tensor) back on its first view: the one
     whose x axis is steps, which a finding's step range zooms. */
  function firstView(chart) {
    var menus = chart.layout && chart.layout.updatemenus;
    if (!menus || !menus.length || !menus[0].active) { return; }
    var args = menus[0].buttons[0].args;
    var layout = { "updatemenus[0].active": 0 };
    Object.keys(args[1] || {}).forEach(function (k) { layout[k] = args[1][k]; });
    Plotly.update(chart, args[0], layout);
  }

  function showFinding(a, ev) {
    var chart = document.getElementById("chart-" + a.getAttribute("data-chart"));
    if (!chart || !state.charts[chart.id]) { return; }
    ev.preventDefault();
    var start = parseFloat(a.getAttribute("data-start"));
    var end = parseFloat(a.getAttribute("data-end"));
    chart.scrollIntoView({ behavior: "smooth", block: "center" });
    if (isNaN(start) && isNaN(end)) { return; }
    firstView(chart);
    if (isNaN(start)) { start = end; }
    if (isNaN(end)) { end = start; }
    var full = chart._fullLayout && chart._fullLayout.xaxis ? chart._fullLayout.xaxis : null;
    var span = full && full.range ? Math.abs(full.range[1] - full.range[0]) : (end - start + 1);
    var pad = Math.max((end - start) * 0.5, span * 0.02, 2);
    var highlight = {
      type: "rect", xref: "x", yref: "paper", x0: start - 0.5, x1: end + 0.5, y0: 0, y1: 1,
      fillcolor: a.getAttribute("data-colour") || "#888", opacity: 0.3,
      line: { width: 2, color: "#000" }, layer: "above"
    };
    var shapes = state.charts[chart.id].shapes.concat([highlight]);
    Plotly.relayout(chart, { "xaxis.range": [start - pad, end + pad], shapes: shapes });
  }

  function sortTable(th) {
    var table = th.closest("table");
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var v = row.cells[index].getAttribute("data-value");
      var n = parseFloat(v);
      return (v !== null && v !== "" && !isNaN(n) && isFinite(v)) ? n : (v === "" ? null : v);
    }
    rows.sort(function (r1, r2) {
      var a = key(r1), b = key(r2);
      if (a === null) { return 1; }
      if (b === null) { return -1; }
      var c = (typeof a === "number" && typeof b === "number") ? a - b : String(a).localeCompare(String(b));
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw();
    document.addEventListener("click", function (ev) {
      var a = ev.target && ev.target.closest ? ev.target.closest("a.show-finding") : null;
      if (a) { showFinding(a, ev); }
    });
    document.querySelectorAll("table.sortable th").forEach(function (th) {
      th.addEventListener("click", function () { sortTable(th); });
    });
  });
})();
