"""The README's picture of an evaluation report: its first screen in headless Chromium.

    .venv/bin/python bench/report_picture.py bench-lakes/demo/lake/_reports/evaluate-<date>-<run>/index.html

Debian's Chromium (installed by setup), driven by Playwright as the report's browser test drives it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"]


def main(
    report: Annotated[Path, typer.Argument(help="An evaluation report's index.html.")],
    out: Annotated[Path, typer.Option(help="Where the PNG goes.")] = REPO / "docs" / "images" / "report.png",
    width: Annotated[int, typer.Option(help="Viewport width in pixels.")] = 1100,
    height: Annotated[int, typer.Option(help="Viewport height in pixels.")] = 720,
) -> None:
    """Screenshot the first screen of ``report`` into ``out``."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise typer.BadParameter("Chromium is not installed: run `make setup`")
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(out))
        finally:
            browser.close()
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
