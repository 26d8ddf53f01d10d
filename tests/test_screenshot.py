"""The report screenshot helper: clear errors without a browser, a real PNG with one."""

from __future__ import annotations

import shutil

import pytest

from whatsreal.report.screenshot import find_browser, screenshot


def test_no_browser_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        find_browser()


def test_missing_page_and_bad_size_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such report page"):
        screenshot(tmp_path / "nope.html", tmp_path / "x.png")
    page = tmp_path / "p.html"
    page.write_text("<html><body>x</body></html>")
    with pytest.raises(ValueError, match="width and height"):
        screenshot(page, tmp_path / "x.png", width=0)


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium on this machine",
)
def test_a_page_renders_to_a_png_of_the_asked_size(tmp_path):
    from PIL import Image

    page = tmp_path / "p.html"
    page.write_text("<html><body style='background:#c00'><h1>whatsreal</h1></body></html>")
    out = screenshot(page, tmp_path / "shot.png", width=320, height=200)
    img = Image.open(out).convert("RGB")
    assert img.size == (320, 200)
    assert img.getpixel((300, 190)) == pytest.approx((204, 0, 0), abs=8)  # the page's red
    assert not list(tmp_path.glob(".*.part"))
