// The table sorting of a cnnlab report, written into each HTML file (cnnlab.workflows.report.html).
// A click on a header of a table.sortable (a button inside the th) sorts its body rows by that
// column, ascending, a second click descending; th[data-type=num] cells sort by their data-value;
// empty cells ('-') stay last; ties keep their order.
(function () {
  "use strict";
  function value(cell, type) {
    var v = cell.getAttribute("data-value");
    if (v === null) { v = cell.textContent.trim(); }
    if (type === "num") { var x = parseFloat(v); return isNaN(x) ? null : x; }
    return (v === "" || v === "-") ? null : v.toLowerCase();
  }
  function sortBy(table, th, col) {
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) { heads[h].setAttribute("aria-sort", "none"); }
    th.setAttribute("aria-sort", dir);
    var type = th.getAttribute("data-type") || "text";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return { row: row, i: i, v: value(row.cells[col], type) }; });
    keyed.sort(function (a, b) {
      if (a.v === null || b.v === null) { return (a.v === null) - (b.v === null) || a.i - b.i; }
      var c = a.v < b.v ? -1 : (a.v > b.v ? 1 : 0);
      return (dir === "descending" ? -c : c) || a.i - b.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
})();
