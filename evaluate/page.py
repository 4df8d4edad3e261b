"""`pipeline serve`'s web page (Gradio, an optional extra: `pip install -e '.[app]'`): a person drops or picks
images and sees each overlay with its colour key, the hair's share of the image and a download of the mask PNG,
with the model card's metrics beside them. The backend is the Python API (HairSegmenter); a file that cannot be
used gets its one-line message on the page, never a stack trace.

`segment_files` is the page's prediction endpoint (`/segment` in Gradio's API) without Gradio: it is what the
page calls and what the tests compare with the API.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hairdiff.core.errors import HairdiffError, UsageError
from hairdiff.evaluate.overlay import PREDICT_KEY, key_text, mask_overlay
from hairdiff.model.portable import trained_head

TITLE = "hairdiff: hair segmentation"


def require_gradio():
    """The gradio module, or a UsageError saying how to install the extra."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a lab machine
    try:
        import gradio
    except ImportError:
        raise UsageError("`pipeline serve` needs Gradio, an optional extra: pip install -e '.[app]' in a checkout "
                         "(or pip install 'hairdiff[app]')") from None
    return gradio


@dataclass
class PageResult:
    """What one request shows: overlays (path, caption), mask PNGs to download, and the text under them."""

    overlays: list[tuple[str, str]] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(self.lines)


def segment_files(segmenter, files: list[str] | None, out_dir: Path, max_images: int) -> PageResult:
    """Segment the uploaded files one by one; each result's overlay (with the colour key drawn under it) and its
    mask (0 background, 255 hair, the image's own size) are written under `out_dir`; an unusable file is a line
    saying why, and the others are still segmented."""
    from hairdiff.evaluate.inputs import to_rgb_array

    res = PageResult()
    files = [f for f in (files or []) if f]
    if not files:
        res.lines.append("Drop or pick one or more images (.jpg, .png, .bmp, .webp) above.")
        return res
    if len(files) > max_images:
        res.lines.append(f"**{len(files)} files: the first {max_images} are segmented** (this page takes up to "
                         f"{max_images} at a time).")
        files = files[:max_images]
    batch = Path(out_dir) / uuid.uuid4().hex[:12]
    batch.mkdir(parents=True)
    for k, path in enumerate(files):
        name = Path(path).name
        try:
            image = to_rgb_array(Path(path), k)
            seg = segmenter.segment_arrays([image], [name])[0]
        except HairdiffError as e:
            res.lines.append(f"**{name}: not segmented.** {str(e).replace(str(path), name)}")
            continue
        stem = f"{k:02d}_{Path(name).stem}"
        overlay, mask = batch / f"{stem}_overlay.png", batch / f"{stem}_mask.png"
        Image.fromarray(mask_overlay(image, seg.mask)).save(overlay)
        Image.fromarray(seg.mask * np.uint8(255)).save(mask)
        caption = f"{name}: hair {seg.hair_fraction:.1%} of the image"
        res.overlays.append((str(overlay), caption))
        res.masks.append(str(mask))
        res.lines.append(f"**{name}**: hair covers {seg.hair_fraction:.1%} of the image ({image.shape[1]} x "
                         f"{image.shape[0]} px); mask: `{mask.name}` below.")
    if res.overlays:
        res.lines.append(f"Colour key: {key_text(PREDICT_KEY)} (also drawn under each picture). Masks: PNG, 0 = "
                         "background, 255 = hair, at each image's own size.")
    return res


def card_markdown(segmenter) -> str:
    """The model card's facts beside the results: what the model is and how it scored."""
    from hairdiff.evaluate.card import TINY_LINE, evaluation_lines
    from hairdiff.evaluate.metrics import PAPER_KEYS

    card = segmenter.card
    head = trained_head(segmenter.source)
    lines = [TINY_LINE, ""] if card["random_weights"] else []
    lines += [f"### Model: {card['name']}", "",
              f"Backbone `{card['backbone'].get('name')}` ({card['backbone'].get('kind')}), features at "
              f"{card['features'].get('resolution')} px; the {head.get('source')} head of `{card['run']}` "
              f"(iteration {head.get('iteration')}).", "", "### Evaluation", ""]
    return "\n".join(lines + evaluation_lines(card["evaluation"], (*PAPER_KEYS, "hair_iou")))


KEEP_SECONDS = 3600  # a request's files, ours and gradio's copies of them, are kept an hour


def drop_older(folder: Path, seconds: float) -> None:
    """Remove the request folders under `folder` last written more than `seconds` ago."""
    now = time.time()
    for batch in Path(folder).iterdir():
        try:
            old = now - batch.stat().st_mtime > seconds
        except FileNotFoundError:  # removed by another request meanwhile
            continue
        if old:
            shutil.rmtree(batch, ignore_errors=True)


def build_page(segmenter, max_images: int = 8):
    """The page as a gradio Blocks; `segment` is its prediction endpoint."""
    gr = require_gradio()
    out_dir = Path(tempfile.mkdtemp(prefix="hairdiff-serve-"))
    atexit.register(shutil.rmtree, out_dir, True)

    def segment(files):
        drop_older(out_dir, KEEP_SECONDS)  # a page served for days would otherwise fill the disk
        res = segment_files(segmenter, files, out_dir, max_images)
        return res.overlays, res.text, res.masks or None

    with gr.Blocks(title=TITLE, delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as page:
        gr.Markdown(f"# {TITLE}\nDrop or pick images: each comes back with the predicted hair tinted green, the "
                    "hair's share of the image, and its mask to download.")
        with gr.Row():
            with gr.Column(scale=3):
                files = gr.File(label="Images (.jpg .png .bmp .webp)", file_count="multiple", type="filepath",
                                elem_id="images")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
                gallery = gr.Gallery(label="Overlays: green = predicted hair", columns=2, height="auto",
                                     object_fit="contain", elem_id="overlays")
                status = gr.Markdown(elem_id="status")
                masks = gr.File(label="Masks (PNG: 0 = background, 255 = hair)", file_count="multiple",
                                interactive=False, elem_id="masks")
            with gr.Column(scale=2):
                gr.Markdown(card_markdown(segmenter), elem_id="card")
        files.upload(segment, inputs=files, outputs=[gallery, status, masks], api_name=False)
        run.click(segment, inputs=files, outputs=[gallery, status, masks], api_name="segment")
    page.hairdiff_out_dir = out_dir
    return page
