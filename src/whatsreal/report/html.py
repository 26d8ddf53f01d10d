"""A self-contained HTML report: text, tables and matplotlib figures inlined as PNG."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whatsreal.utils import atomic_write_text

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #446; padding-bottom: .2em; }
h2 { margin-top: 2em; color: #335; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccd; padding: .3em .7em; text-align: right; }
th { background: #eef; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
img { max-width: 100%; }
.note { background: #f6f6fb; border-left: 4px solid #99b; padding: .5em 1em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


class HtmlReport:
    """Collect sections, then :meth:`write` one HTML file with everything embedded."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading; ``id`` is derived from the text so sections can be linked."""
        anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
        self.parts.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph (plain text; ``code`` in backticks is rendered as code)."""
        escaped = html.escape(text)
        pieces = escaped.split("`")
        body = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{body}</p>")

    def table(self, rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
        """A table; floats are shown with three decimals, None as a dash."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows
        )
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Any, caption: str = "", save_png: str | Path | None = None) -> None:
        """Inline a matplotlib figure as PNG (optionally also saved to ``save_png``)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        data = buf.getvalue()
        if save_png is not None:
            from whatsreal.utils import atomic_write_bytes

            atomic_write_bytes(save_png, data)
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        alt = html.escape(caption)
        img = f'<img src="data:image/png;base64,{b64}" alt="{alt}">'
        self.parts.append(f"<figure>{img}{cap}</figure>")

    def render(self) -> str:
        """The whole page as a string."""
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self.parts) + "</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically."""
        return atomic_write_text(path, self.render())


def combine_reports(
    path: str | Path, title: str, intro: str, pages: Sequence[tuple[str, str | Path]]
) -> Path:
    """One self-contained page holding several pages that :class:`HtmlReport` wrote, each
    under its own heading (its headings one level down, its anchors prefixed so that they
    stay unique), after ``intro``. ``pages``: (heading, path) pairs. Written atomically."""
    out = Path(path)
    rep = HtmlReport(title)
    rep.text(intro, note=True)
    for heading, page in pages:
        text = Path(page).read_text(encoding="utf-8")
        start, end = text.find("<body>"), text.rfind("</body>")
        if start < 0 or end < 0:
            raise ValueError(f"{page} is not a page written by HtmlReport (no <body>)")
        body = re.sub(r"^\s*<h1>.*?</h1>", "", text[start + len("<body>") : end], count=1)
        slug = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
        body = re.sub(r"<(/?)h([1-5])\b", lambda m: f"<{m[1]}h{int(m[2]) + 1}", body)
        body = body.replace(' id="', f' id="{slug}-')
        rep.heading(heading)
        try:
            link = Path(page).resolve().relative_to(out.resolve().parent)
        except ValueError:
            link = Path(page).resolve()
        rep.text(f"The same as a page of its own: `{link}`.")
        rep.parts.append(body)
    return rep.write(out)
