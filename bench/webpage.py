"""Leaderboards as one self-contained HTML page: no network, no external file.

Each board is a table whose rows are grouped by family (one <tbody> per method, headed by its name,
families in the paper's order); a click on a column header sorts the rows within each family by that
column (a second click reverses), and a checkbox lifts the grouping so that a click sorts every row.
Every cell carries its sort key in `data-v` (the mean for a metric, the row's place in the paper's
order for method and setting), so sorting never parses the shown `mean ± std` text. Figures are
embedded as data: URIs. Output is deterministic: the same boards give the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass

STYLE = """
body{font-family:"DejaVu Sans",Verdana,sans-serif;margin:1.5em;color:#111;max-width:84em}
table.board{border-collapse:collapse;margin:0.5em 0 1em 0;font-size:0.9em}
table.board td,table.board th{border:1px solid #bbb;padding:3px 8px;text-align:right;white-space:nowrap}
table.board td:first-child,table.board td:nth-child(2),table.board td.text{text-align:left}
table.board thead th{background:#eee;cursor:pointer;user-select:none}
table.board thead th[aria-sort=ascending]::after{content:" \\25B2"}
table.board thead th[aria-sort=descending]::after{content:" \\25BC"}
table.board tr.group th{background:#f6f6f6;text-align:left;font-style:italic;cursor:default}
table.board tr.reported td{color:#555;font-style:italic}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.9em;color:#333}
.meta{font-size:0.9em;color:#333}
"""

# Sorting and grouping, in plain DOM calls (no library, nothing fetched).
SCRIPT = """
(function () {
  function keyOf(row, col) {
    var v = row.cells[col].getAttribute('data-v');
    if (v === null || v === '') return null;
    var n = Number(v);
    return isNaN(n) ? v : n;
  }
  function compare(a, b, col, dir) {  // missing values last, whatever the direction
    var x = keyOf(a, col), y = keyOf(b, col);
    if (x === null || y === null) return (x === null) - (y === null);
    if (typeof x === 'number' && typeof y === 'number') return dir * (x - y);
    return dir * String(x).localeCompare(String(y));
  }
  function dataRows(body) {
    return Array.prototype.filter.call(body.rows, function (r) { return !r.classList.contains('group'); });
  }
  function place(a, b) { return Number(a.getAttribute('data-i')) - Number(b.getAttribute('data-i')); }
  function sortTable(table) {
    var col = table.getAttribute('data-col');
    if (col === null) return;
    col = Number(col);
    var dir = Number(table.getAttribute('data-dir'));
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var rows = dataRows(body);
      rows.sort(function (a, b) { return compare(a, b, col, dir) || place(a, b); });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  }
  function regroup(table, grouped) {
    var flat = table.querySelector('tbody.all');
    var families = table.querySelectorAll('tbody.family');
    if (grouped && flat) {
      dataRows(flat).forEach(function (r) {
        var family = r.getAttribute('data-family');
        Array.prototype.filter.call(families, function (b) { return b.getAttribute('data-family') === family; })[0]
          .appendChild(r);
      });
      flat.parentNode.removeChild(flat);
      Array.prototype.forEach.call(families, function (b) { b.hidden = false; });
    } else if (!grouped && !flat) {
      flat = document.createElement('tbody');
      flat.className = 'all';
      Array.prototype.forEach.call(families, function (b) {
        dataRows(b).forEach(function (r) { flat.appendChild(r); });
        b.hidden = true;
      });
      table.appendChild(flat);
    }
    sortTable(table);
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.board'), function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var again = table.getAttribute('data-col') === String(col) && table.getAttribute('data-dir') === '1';
        var dir = again ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
        table.setAttribute('data-col', String(col));
        table.setAttribute('data-dir', String(dir));
        sortTable(table);
      });
    });
    var box = document.getElementById(table.id + '-grouped');
    if (box) box.addEventListener('change', function () { regroup(table, box.checked); });
  });
})();
"""


@dataclass(frozen=True)
class Figure:
    """A picture for the page: its file name, a caption, the PNG bytes embedded as data."""

    name: str
    caption: str
    png: bytes

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (f"<figure id='fig-{html.escape(self.name)}'><img alt='{html.escape(self.caption)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(self.caption)}</figcaption></figure>")


def _sort_value(text: str) -> str:
    """The mean of a `mean ± std` cell (`-31.00 ± 1.41` -> -31.00), '' where there is none."""
    head = text.split("±")[0].strip()
    try:
        value = float(head)
    except ValueError:
        return ""
    return repr(value) if math.isfinite(value) else ""


def board_table(board, table_id: str) -> str:
    """One board as a sortable table, rows grouped by family (`Leaderboard.cells` order)."""
    header = board._header()
    metric_columns = set(board.metrics) | {"n"}
    head = "".join(f"<th scope='col'>{html.escape(h)}</th>" for h in header)
    bodies: dict[str, list[str]] = {}
    for i, cells in enumerate(board.cells()):
        family = cells["method"]
        tds = []
        for column in header:
            if column in ("method", "setting"):
                tds.append(f"<td data-v='{i}'>{html.escape(cells[column])}</td>")
            elif column == "source":
                source = cells["source"] + (f": {cells['paper_name']}" if cells.get("paper_name") else "")
                tds.append(f"<td class='text' data-v='{html.escape(cells['source'])}'>{html.escape(source)}</td>")
            elif column in metric_columns:
                text, bold = cells[column]
                shown = f"<b>{html.escape(text)}</b>" if bold else html.escape(text)
                tds.append(f"<td data-v='{_sort_value(text)}'>{shown}</td>")
        kind = " class='reported'" if cells["source"] == "reported" else ""
        bodies.setdefault(family, []).append(
            f"<tr{kind} data-i='{i}' data-family='{html.escape(family)}'>{''.join(tds)}</tr>")
    groups = "".join(
        f"<tbody class='family' data-family='{html.escape(family)}'><tr class='group'>"
        f"<th colspan='{len(header)}' scope='rowgroup'>{html.escape(family)}</th></tr>{''.join(rows)}</tbody>"
        for family, rows in bodies.items())
    toggle = (f"<label class='meta'><input type='checkbox' id='{table_id}-grouped' checked> rows grouped by "
              "family (a click on a header sorts within each family; untick to sort every row)</label>")
    return f"{toggle}<table class='board' id='{table_id}'><thead><tr>{head}</tr></thead>{groups}</table>"


def board_section(board, heading: str = "h1", table_id: str = "board") -> str:
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in board.notes)
    return (f"<{heading}>{html.escape(board.title)}</{heading}>{board_table(board, table_id)}"
            f"<ol class='notes'>{notes}</ol>")


def page(title: str, boards: list, figures: list[Figure] = (), preamble: str = "") -> str:
    """The whole page: a heading (several boards), `preamble` (trusted HTML), each board, the figures."""
    heading = "h1" if len(boards) == 1 and not preamble else "h2"
    top = "" if heading == "h1" else f"<h1>{html.escape(title)}</h1>"
    sections = "".join(board_section(b, heading, f"board{i}") for i, b in enumerate(boards))
    pictures = "".join(f.html() for f in figures)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"{top}{preamble}{sections}{pictures}<script>{SCRIPT}</script></body></html>\n")
