"""`pipeline cache views`: a store's views as pictures, to see that an augmentation does what it says.

For each of the first N images of a store: one panel per view (the original first), each the view's image
in the original's frame (re-rendered from the dataset with the store's own recipe and seed, as extraction
rendered it) with the label the store holds for that sample tinted on it: hair green, ignore grey (canvas
padding, letterbox, the dataset's own ignore pixels). Under each panel, the view's name and the hair's share
of the frame; `views.json` holds the same per sample with its ratio to the original's share. The label is
the stored one (read with its checksum), so the picture shows what training reads, not a recomputation;
where the dataset is reachable, the re-rendered label is compared with it and a mismatch is reported (the
source files changed since extraction).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hairdiff.core.errors import DatasetError
from hairdiff.core.files import atomic_write
from hairdiff.core.labels import IGNORE
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.overlay import IGNORED, NO_IMAGE, TP, label_font, tint, with_key

VIEW_KEY = (("green", TP, "hair (the label the store holds)"),
            ("grey", IGNORED, "ignore (canvas, letterbox or dataset padding: not trained on)"))
PANEL = 256  # longest side of a panel, pixels


def _panel(image: np.ndarray | None, label: np.ndarray, caption: str) -> np.ndarray:
    h, w = label.shape
    base = np.full((h, w, 3), NO_IMAGE, np.uint8) if image is None else np.asarray(
        Image.fromarray(image).convert("RGB").resize((w, h), Image.BILINEAR))
    out = base.astype(np.float32)
    tint(out, label == 1, TP, 0.5)
    tint(out, label == IGNORE, IGNORED, 0.6)
    scale = PANEL / max(h, w)
    pic = Image.fromarray(out.clip(0, 255).astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    font = label_font(12)
    canvas = Image.new("RGB", (PANEL, pic.height + 18), (255, 255, 255))
    canvas.paste(pic, (0, 0))
    ImageDraw.Draw(canvas).text((2, pic.height + 2), caption, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _row(panels: list[np.ndarray]) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, 1)


def _sources(store):
    """(reader, {id: ref}, views, seed) to re-render views from the dataset, or None when it is unreachable."""
    from hairdiff.extract.readers.registry import get_reader
    from hairdiff.extract.views import parse_views

    try:
        reader = get_reader(store.dataset)
        originals = [store.ids[i] for i in store.layout.originals()]
        refs = {r.id: r for r in reader.list_samples(Path(store.root), store.split, originals)}
    except (DatasetError, OSError):  # the dataset moved or is not mounted here: the labels alone still show
        return None
    fp_views = (store.fingerprint_inputs or {}).get("views") or {}
    return reader, refs, parse_views(store.layout.recipe), int(fp_views.get("seed", 0))


def view_sheet(store, out_dir: Path, images: int = 4, progress: ProgressFactory = silent) -> dict:
    """Write OUT/<id>.png (one row of views per image, a colour key under it) and OUT/views.json."""
    from hairdiff.extract.views import apply

    layout, done = store.layout, store.done_mask()
    firsts = [k for k in range(layout.num_images) if all(done[layout.views_of(k)])][:images]
    src = _sources(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, files = [], []
    with progress("views", len(firsts), 0) as advance:
        for k in firsts:
            image_id = store.ids[layout.sample(k, 0)]
            original = ref = None
            if src is not None and image_id in src[1]:
                ref = src[1][image_id]
                original = src[0].load(ref)
            panels, share0 = [], None
            for v in range(layout.num_views):
                j = layout.sample(k, v)
                label = store.read_label(j)
                frame = label.size
                share = float((label == 1).sum()) / frame
                share0 = share if v == 0 else share0
                image, same = None, None
                if original is not None:
                    image, again = (original.image, original.label) if v == 0 else apply(
                        src[2][v - 1], image_id, original.image, original.label, src[3])
                    same = bool(np.array_equal(again, label))
                name = layout.names[v]
                ratio = share / share0 if share0 else None
                rows.append({"id": store.ids[j], "image": image_id, "view": name, "hair_fraction": share,
                             "ratio_to_original": ratio, "rerendered_label_matches": same})
                caption = f"{name}: hair {share:.1%}" + (f" ({ratio:.2f}x)" if v and ratio is not None else "")
                panels.append(_panel(image, label, caption + ("" if same in (None, True) else " SOURCE CHANGED")))
            path = out_dir / f"{image_id.replace('/', '_')}.png"
            Image.fromarray(with_key(_row(panels), VIEW_KEY)).save(path)
            files.append(str(path))
            advance(1)
    report = {"store": store.url, "recipe": layout.recipe, "views": list(layout.names), "images": len(firsts),
              "pictures": files, "samples": rows,
              "source": "re-rendered from the dataset" if src is not None else "dataset unreachable: labels only"}
    atomic_write(out_dir / "views.json", json.dumps(report, indent=1))
    return report
