"""Refresh the README's screenshots of the HTML reports (issue 26): one PNG per report.

    python docs/screenshots.py            # writes docs/html-report-{scan,diff,series,check}.png

Each page is rendered by the command line (tests/html_reports.py: the DeepSeek-V3-style MTP
fixture, a diff of two of its checkpoints, a 600-checkpoint Qwen3-style run with TensorBoard
losses, the check of the MTP fixture), opened in headless Chromium (tests/browser.py, Debian's
`chromium`) in a 1280-pixel-wide window, captured from the top, and stored as a 256-colour PNG
(Pillow, matplotlib's dependency) to keep the repository small.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from browser import Browser, find_chromium  # noqa: E402
from html_reports import render_all  # noqa: E402

SHOTS = {"scan": 1500, "diff": 1100, "series": 1700, "check": 900}
"""Report -> the height captured (CSS pixels), enough for what a reader sees first."""
WIDTH = 1280


def optimise(path: Path) -> None:
    """A palette PNG: screenshots of flat colours lose nothing visible at 256 colours."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DOCS, help="folder for the PNGs")
    parser.add_argument("--all", action="store_true", help="every page, not only the README's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    binary = find_chromium()
    if binary is None:
        sys.exit("no Chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="normscope-shots-") as tmp:
        pages = render_all(Path(tmp))
        browser = Browser(binary)
        try:
            for name, page_path in pages.items():
                if name not in SHOTS and not args.all:
                    continue
                page, _ = browser.open(page_path)
                png = args.out / f"html-report-{name}.png"
                page.screenshot(png, WIDTH, SHOTS.get(name, 1500))
                optimise(png)
                print(f"{png} ({png.stat().st_size / 1024:.0f} kB)")
        finally:
            browser.close()


if __name__ == "__main__":
    main()
