#!/usr/bin/env python3
"""Opens leaklab reports in headless Chromium as a reader would, through
Selenium and chromium-driver, and checks each page:

- it loads with no error on the browser console (the console capture is
  proven first on a page that logs an error on purpose);
- its inline SVG charts and its flame graphs name SITE (the leak's site),
  where the page is expected to show it;
- the charts' text is laid out by the browser (no font file is needed);
- the flame graphs answer the page's search and show bytes on hover;
- a screenshot of the whole page is saved beside it.

Usage: check_report.py OUT_DIR SITE PAGE[:must|:may] ...
A page marked :must names SITE in its timeline and in its flame graph.
"""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

WIDTH = 1400


def browser():
    opts = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},1000"]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    return webdriver.Chrome(service=Service(driver), options=opts)


def errors(d):
    return [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def check_page(d, path, site, must, out_dir, failures):
    name = os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path).replace(".html", "")
    d.get("file://" + os.path.abspath(path))
    time.sleep(1.0)
    fail = lambda msg: failures.append(f"{path}: {msg}")
    for e in errors(d):
        fail(f"console error on load: {e['message']}")
    inline = d.execute_script(
        "return Array.from(document.querySelectorAll('main svg')).map(s => s.outerHTML);")
    if len(inline) < 2:
        fail(f"{len(inline)} inline SVG charts, expected the timeline and the pool's view")
    empty_text = d.execute_script("""
        var n = 0, bad = 0;
        document.querySelectorAll('main svg text').forEach(function (t) {
          if (!t.textContent.trim()) return;
          n += 1; if (t.getBBox().width <= 0) bad += 1; });
        return [n, bad];""")
    if empty_text[0] == 0 or empty_text[1] > 0:
        fail(f"chart text not laid out: {empty_text[1]} of {empty_text[0]} labels have no width")
    flames = d.execute_script("""
        return Array.from(document.querySelectorAll('iframe.flame')).map(function (f) {
          var doc = f.contentDocument;
          return doc && doc.querySelector('svg') ? doc.querySelector('svg').outerHTML : null; });""")
    if not flames or any(f is None for f in flames):
        fail("a flame graph frame has no SVG document (or cannot be read)")
        flames = [f for f in flames if f]
    if must:
        if not any(site in s for s in inline):
            fail(f"no inline chart names {site}")
        if not flames or site not in flames[0]:
            fail(f"the flame graph does not name {site}")
        else:
            # Search through the page's own box, and hover a frame.
            d.execute_script("flameSearch(arguments[0]);", site)
            time.sleep(0.3)
            status = d.execute_script("return document.getElementById('flame-status').textContent;")
            lit = d.execute_script("""
                var doc = document.querySelector('iframe.flame').contentDocument;
                var color = doc.defaultView.searchcolor;
                return Array.from(doc.querySelectorAll('#frames rect'))
                  .filter(r => r.getAttribute('fill') === color).length;""")
            if "highlighted" not in status or lit == 0:
                fail(f"searching {site} highlighted nothing (status {status!r}, {lit} frames)")
            hover = d.execute_script("""
                var doc = document.querySelector('iframe.flame').contentDocument;
                var g = Array.from(doc.querySelectorAll('#frames g'))
                  .find(g => g.querySelector('title').textContent.indexOf(arguments[0]) >= 0);
                g.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
                return doc.getElementById('details').textContent;""", site)
            if site not in hover or "bytes" not in hover:
                fail(f"hovering {site} shows {hover!r}, not its bytes")
            shot = os.path.join(out_dir, name + "-search.png")
            d.find_elements("css selector", "iframe.flame")[0].screenshot(shot)
            print(f"  screenshot: {shot}")
            d.execute_script("flameSearch('');")
    for e in errors(d):
        fail(f"console error while searching: {e['message']}")
    height = d.execute_script("return document.documentElement.scrollHeight;")
    d.set_window_size(WIDTH, min(height + 40, 16000))
    time.sleep(0.5)
    shot = os.path.join(out_dir, name + ".png")
    d.save_screenshot(shot)
    d.set_window_size(WIDTH, 1000)
    print(f"{path}: {len(inline)} charts, {len(flames)} flame graph(s), {empty_text[0]} labels; screenshot: {shot}")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out_dir, site, pages = sys.argv[1], sys.argv[2], sys.argv[3:]
    failed = {}
    d = browser()
    try:
        # The console capture works: an error logged on purpose is seen.
        d.get("data:text/html,<script>console.error('leaklab-probe')</script>")
        time.sleep(0.3)
        if not any("leaklab-probe" in e["message"] for e in errors(d)):
            failed["console"] = ["the browser console is not captured: console errors cannot be checked"]
        for page in pages:
            path, _, mark = page.partition(":")
            failures = []
            check_page(d, path, site, mark == "must", out_dir, failures)
            if failures:
                failed[path] = failures
    finally:
        d.quit()
    for msgs in failed.values():
        for m in msgs:
            print("FAIL " + m)
    bad = len([p for p in failed if p != "console"])
    print(f"{len(pages) - bad} passed, {bad} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
