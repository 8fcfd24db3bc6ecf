"""`python -m infra.report.dashboard_picture [OUT]`: the dashboard's layout as an SVG picture.

Drawn from `infra.plan.observability.layout` (the same tiles the Cloud Monitoring dashboard is
built from): section headers, each panel's title, unit and what it is grouped by, on the
48-column mosaic. Written by hand as SVG (no plotting library), byte-for-byte reproducible; a
test compares the committed `docs/dashboard-layout.svg` with a fresh rendering, and the
layout's digest is in the file for a reader to see which definition it shows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Final

from infra.plan.observability import GRID_COLUMNS, Panel, Scope, layout, layout_digest, panels
from serve.paths import REPO_ROOT

PICTURE: Final = REPO_ROOT / "docs" / "dashboard-layout.svg"
CELL: Final = 20  # pixels per mosaic column
ROW: Final = 10  # pixels per mosaic row
MARGIN: Final = 10


def render() -> str:
    scope = Scope("cluster")
    by_title: dict[str, Panel] = {panel.title: panel for panel in panels(scope)}
    tiles = layout(scope)
    width = GRID_COLUMNS * CELL + 2 * MARGIN
    height = max(tile.y + tile.height for tile in tiles) * ROW + 2 * MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f"<!-- llm-serving dashboard layout {layout_digest()}: python -m infra.report.dashboard_picture -->",
        f'<rect width="{width}" height="{height}" fill="#f8f9fa"/>',
    ]
    for tile in tiles:
        x, y = MARGIN + tile.x * CELL, MARGIN + tile.y * ROW
        w, h = tile.width * CELL, tile.height * ROW
        if tile.header:
            out.append(
                f'<text x="{x + 4}" y="{y + h - 12}" font-size="18" font-weight="bold" '
                f'fill="#202124">{escape(tile.title)}</text>'
            )
            out.append(f'<line x1="{x}" y1="{y + h - 4}" x2="{x + w}" y2="{y + h - 4}" stroke="#5f6368"/>')
            continue
        panel = by_title[tile.title]
        fill = "#eef3fd" if panel.cluster_only else "#ffffff"
        out.append(
            f'<rect x="{x + 4}" y="{y + 4}" width="{w - 8}" height="{h - 8}" rx="6" '
            f'fill="{fill}" stroke="#dadce0"/>'
        )
        lines = [
            (escape(panel.title), 15, "bold"),
            (escape(f"unit {panel.unit} · by {', '.join(panel.group_by)}"), 12, "normal"),
            (escape(", ".join(series.name for series in panel.series)), 12, "normal"),
            (escape(", ".join(sorted({metric.name for metric in panel.metrics}))[:90]), 10, "normal"),
        ]
        if panel.cluster_only:
            lines.append(("cluster only (GKE)", 10, "normal"))
        for index, (text, size, weight) in enumerate(lines):
            out.append(
                f'<text x="{x + 16}" y="{y + 30 + index * 22}" font-size="{size}" font-weight="{weight}" '
                f'fill="#3c4043">{text}</text>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    path = Path(arguments[0]) if arguments else PICTURE
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path} (layout {layout_digest()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
