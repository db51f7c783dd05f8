"""Every file of ``skillmix compare --out``: the view model is built once, and each renderer
lays it out (compare.json, compare.md, compare.html and the plots as PNG files)."""

from __future__ import annotations

import json

from skillmix.report.compare_view import Comparison, model_label
from skillmix.report.figures import metric_images
from skillmix.report.html_compare import compare_html
from skillmix.report.markdown_compare import compare_markdown
from skillmix.report.plots import DEFAULT_DPI


def compare_files(doc: Comparison, *, dpi: int | None = None) -> dict[str, bytes]:
    """compare.json, compare.md, compare.html and the plots as ``plots/NAME.png`` (the same
    images are embedded in compare.html and shown by compare.md)."""

    images = metric_images(doc.leaderboards, model_label, dpi or DEFAULT_DPI, prefix="compare")
    text = json.dumps(doc.model_dump(mode="json"), indent=2, ensure_ascii=False)
    files = {
        "compare.json": text.encode() + b"\n",
        "compare.md": compare_markdown(doc, [(i.name, i.title) for i in images]).encode(),
        "compare.html": compare_html(doc, dpi=dpi, images=images).encode(),
    }
    for image in images:
        files[f"plots/{image.name}.png"] = image.png
    return files
