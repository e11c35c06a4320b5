"""index.html rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import proc
from harness.results import html
from tests.report_sample import _results

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (Debian package 'chromium')")
def test_index_html_in_headless_chromium(tmp_path: Path, junit_file: Path) -> None:
    rd = _results(tmp_path, junit_file)
    failed = next(t for t in rd.summary.tests if t.path.endswith("test_create_class"))
    anchor = html.anchor("test", failed.id)
    # A copy of the page with a probe appended: it runs after the page's own script has
    # opened the linked failure, and writes what is really rendered into the DOM.
    probe = """<script>
    (function () {
      function seen(el) { return !!el && el.getClientRects().length > 0
                          && getComputedStyle(el).visibility !== "hidden"; }
      var sec = document.getElementById(location.hash.slice(1));
      var pre = sec && sec.querySelector("details.console pre");
      var cell = document.querySelector("td.st-fail");
      document.body.setAttribute("data-probe", JSON.stringify({
        table: seen(document.getElementById("matrix")),
        console: seen(pre),
        consoleText: pre ? pre.innerText.slice(-200) : "",
        failColour: cell ? getComputedStyle(cell).backgroundColor : ""
      }));
    }());
    </script></body>"""
    page = rd.path / "probe.html"
    page.write_text((rd.path / "index.html").read_text().replace("</body>", probe))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    url = f"{page.as_uri()}#{anchor}"
    result = proc.run([CHROMIUM, *flags, "--dump-dom", url], check=False, timeout=120,
                      env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    start = dom.index('data-probe="') + len('data-probe="')
    import html as html_lib

    probe_data = json.loads(html_lib.unescape(dom[start:dom.index('"', start)]))
    assert probe_data["table"] is True
    assert probe_data["console"] is True  # the failure's console excerpt is open and rendered
    assert probe_data["consoleText"].rstrip().endswith("<script>alert('console')</script> last console line")
    assert probe_data["failColour"] == "rgb(242, 167, 167)"

    shot = tmp_path / "shot.png"
    result = proc.run([CHROMIUM, *flags, "--window-size=1280,1600", f"--screenshot={shot}",
                       (rd.path / "index.html").as_uri()], check=False, timeout=120,
                      env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


