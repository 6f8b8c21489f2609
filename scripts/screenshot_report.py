"""Render an HTML page (an evaluation report, an explanation) to a PNG in headless Chromium.

    python scripts/screenshot_report.py REPORT_DIR_OR_HTML OUT.png [--width 1280] [--height 2400]

Looks for `chromium`, `chromium-browser`, `google-chrome` (Debian: apt-get install chromium).
The page is opened from disk with networking off, so a page that needs anything from outside
shows it missing. Exit status 2 when no browser is found.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 2400,
               browser: str | None = None, timeout: float = 120) -> Path:
    """Write a `width` x `height` screenshot of `page` (an .html file) to `out`."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found; install it (apt-get install chromium)")
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
                   "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                   f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",
                   "--proxy-bypass-list=<-loopback>", f"--window-size={width},{height}",
                   f"--screenshot={out}", page.absolute().as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    if not out.is_file():
        raise RuntimeError(f"{browser} wrote no screenshot (exit {done.returncode}): "
                           f"{done.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="report directory or .html file")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    page = args.page / "report.html" if args.page.is_dir() else args.page
    if not page.is_file():
        print(f"error: {page} does not exist", file=sys.stderr)
        return 1
    if find_browser() is None:
        print("error: no Chromium found; install it (apt-get install chromium)", file=sys.stderr)
        return 2
    print(screenshot(page, args.out, args.width, args.height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
