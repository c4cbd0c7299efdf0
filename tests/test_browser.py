"""The board page in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run)
loads index.html from disk. The rendered DOM (--dump-dom) has every row; clicks on column headers,
run by a script appended to a copy of the page, sort the rows within each family and, with the
grouping lifted, across all rows; a screenshot is a real PNG."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest
from vae_collapse_bench.bench.plots import save, tradeoff_figure
from vae_collapse_bench.bench.report import Leaderboard
from vae_collapse_bench.bench.tradeoff import tradeoff_points
from vae_collapse_bench.bench.webpage import Figure, page

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None and not os.environ.get("CI"),
                                reason="no Chromium here (.ci/run installs Debian's chromium)")


def frame() -> pd.DataFrame:
    rows = []
    for method, setting, prior in [("dg-vae", "agg=4", -31.0), ("bn-vae", "gamma=0.9", -29.5), ("vae", "-", -30.0),
                                   ("bn-vae", "gamma=0.6", -28.0), ("dg-vae", "agg=default", -33.0),
                                   ("bn-vae", "gamma=1.8", -34.0)]:
        for seed in (0, 1):
            rows.append({"method": method, "setting": setting, "seed": seed, "run_key": f"{method}{setting}{seed}",
                         "priorLL": prior + seed, "postLL": prior / 2 + seed, "KL": 1.0, "MI": 1.0, "AU": 3,
                         "CU": 8, "IW-NLL": -prior, "PPL": 30.0, "D": 8, "N": 64})
    return pd.DataFrame(rows)


@pytest.fixture()
def index_html(tmp_path):
    runs = frame()
    board = Leaderboard.from_runs(runs, "synthetic / smoke")
    png, _ = save(tradeoff_figure(tradeoff_points(runs), "t"), tmp_path / "tradeoff")
    path = tmp_path / "index.html"
    path.write_text(page("Leaderboard", [board], [Figure("tradeoff", "trade-off", png.read_bytes())]))
    return path


def chromium(*args: str, timeout: int = 90) -> str:
    if BROWSER is None:
        pytest.fail("CI must have Chromium: .ci/run installs it (apt-get install chromium)")
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--allow-file-access-from-files", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Rows(HTMLParser):
    """(method, setting) of every board row of a DOM, and the text of <pre id=result>."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.result, self._row, self._cell, self._pre = [], "", None, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-i" in attrs:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "pre" and attrs.get("id") == "result":
            self._pre = True

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._pre:
            self.result += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(tuple(self._row[:2]))
            self._row = None
        elif tag == "pre":
            self._pre = False


def test_the_rendered_page_has_every_row(index_html):
    dom = chromium("--dump-dom", index_html.as_uri())
    expected = [("vae", "-"), ("bn-vae", "gamma=0.6"), ("bn-vae", "gamma=0.9"), ("bn-vae", "gamma=1.8"),
                ("dg-vae", "agg=4"), ("dg-vae", "agg=default")]
    assert Rows(dom).rows == expected  # families in the paper's order, settings in the grid's
    assert "data:image/png;base64," in dom


# Clicks the priorLL header (ascending), again (descending), then lifts the grouping and clicks once
# more; after each step it records the rows' (family, priorLL mean) per table body.
CLICKS = """
<script>
(function () {
  var table = document.querySelector('table.board');
  var th = Array.prototype.filter.call(table.tHead.rows[0].cells,
                                       function (c) { return c.textContent === 'priorLL'; })[0];
  function state() {
    return Array.prototype.filter.call(table.tBodies, function (b) { return !b.hidden; }).map(function (b) {
      return Array.prototype.filter.call(b.rows, function (r) { return r.hasAttribute('data-i'); })
        .map(function (r) {
          return [r.getAttribute('data-family'), Number(r.cells[th.cellIndex].getAttribute('data-v'))];
        });
    });
  }
  var steps = {};
  th.click(); steps.ascending = state(); steps.aria = th.getAttribute('aria-sort');
  th.click(); steps.descending = state();
  var box = document.getElementById(table.id + '-grouped');
  box.checked = false; box.dispatchEvent(new Event('change'));
  steps.ungrouped = state();
  box.checked = true; box.dispatchEvent(new Event('change'));
  steps.regrouped = state();
  var pre = document.createElement('pre'); pre.id = 'result'; pre.textContent = JSON.stringify(steps);
  document.body.appendChild(pre);
})();
</script>
"""


def test_a_click_on_a_header_sorts_the_rows(index_html):
    test_page = index_html.with_name("clicks.html")
    test_page.write_text(index_html.read_text().replace("</body>", CLICKS + "</body>"))
    steps = json.loads(Rows(chromium("--dump-dom", test_page.as_uri())).result)
    assert steps["aria"] == "ascending"
    families = ["vae", "bn-vae", "dg-vae"]
    for name, reverse in (("ascending", False), ("descending", True)):
        bodies = steps[name]
        assert [body[0][0] for body in bodies] == families  # still grouped by family
        for body in bodies:
            values = [v for _, v in body]
            assert values == sorted(values, reverse=reverse) and len(set(f for f, _ in body)) == 1
    (flat,) = steps["ungrouped"]  # one body: every row sorted together (still descending)
    values = [v for _, v in flat]
    assert len(values) == 6 and values == sorted(values, reverse=True)
    assert [body[0][0] for body in steps["regrouped"]] == families
    assert sum(len(b) for b in steps["regrouped"]) == 6


def test_a_screenshot_is_taken(index_html, tmp_path):
    shot = tmp_path / "board.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", index_html.as_uri())
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
