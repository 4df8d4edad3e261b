"""`pipeline cache views`: a store's views as pictures, to see that an augmentation does what it says.

For each of the first N images of a store: one panel per view (the original first), each the view's image
in the original's frame (re-rendered from the dataset with the store's own recipe and seed, as extraction
rendered it) with the label the store holds for that sample tinted on it: hair green, ignore grey (canvas
padding, letterbox, the dataset's own ignore pixels). Under each panel, the view's name and the hair's share
of the frame; `views.json` holds the same per sample with its ratio to the original's share. The label is
the stored one (read with its checksum), so the picture shows what training reads, not a recomputation.

A photo is drawn only where it is what the store was computed from: the dataset's files are the ones it was
extracted from (their data key equals the store's), this code draws views by the rule the store recorded, and
the label re-drawn from the files equals the stored one. Elsewhere the panel shows the stored label alone
(on dark grey), and `problems` (views.json, and the command's stderr and exit status) says why.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
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
NO_PHOTO = " (no photo: see views.json)"
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


@dataclass
class _Sources:
    """What re-draws a store's pictures, and how far it may: `photos` when the dataset's files are the ones the
    store was extracted from, `views` when this code also draws views as the store's recorded rule did."""

    reader: object = None
    refs: dict = field(default_factory=dict)
    views: tuple = ()
    seed: int = 0
    photos: bool = False
    views_drawn: bool = False
    problems: list[str] = field(default_factory=list)


def _sources(store) -> _Sources:
    from hairdiff.extract.readers.registry import get_reader
    from hairdiff.extract.views import parse_views

    src = _Sources()
    originals = [store.ids[i] for i in store.layout.originals()]
    try:
        reader = get_reader(store.dataset)
        refs = {r.id: r for r in reader.list_samples(Path(store.root), store.split, originals)}
    except (DatasetError, OSError) as e:  # the dataset moved or is not mounted here: the labels alone still show
        src.problems.append(f"the dataset at {store.root} is not reachable here ({e}): no photo is drawn, only the "
                            "stored labels")
        return src
    src.reader, src.refs = reader, refs
    src.seed = int(((store.fingerprint_inputs or {}).get("views") or {}).get("seed", 0))
    src.views = parse_views(store.layout.recipe)
    src.photos = _same_files(store, [refs[i] for i in originals], src.problems)
    src.views_drawn = src.photos and _same_rule(store, src.views, src.seed, src.problems)
    return src


def _same_files(store, refs, problems: list[str]) -> bool:
    """The dataset's files are the ones the store was extracted from (the data key over all its images)."""
    from hairdiff.extract.sources import data_key

    if not store.data_key:
        problems.append(f"{store.url} predates data keys, so whether the files under {store.root} are the ones it "
                        "was extracted from cannot be checked: no photo is drawn, only the stored labels")
        return False
    now = data_key(refs)
    if now != store.data_key:
        problems.append(f"the files under {store.root} changed since {store.url} was extracted (its data "
                        f"{store.data_key[:16]}, the files now {now[:16]}): no photo is drawn, only the stored labels")
        return False
    return True


def _same_rule(store, views, seed: int, problems: list[str]) -> bool:
    """This code draws the store's views as it recorded them (rule, ranges, seed: its fingerprint's `views`)."""
    from hairdiff.extract.views import RULE, record

    if not views:
        return True
    stored = (store.fingerprint_inputs or {}).get("views")
    if json.dumps(stored, sort_keys=True) == json.dumps(record(views, seed), sort_keys=True):
        return True
    rule = stored.get("rule") if isinstance(stored, dict) else None
    problems.append(f"{store.url} drew its views under {rule or 'an unrecorded rule'} with other settings than this "
                    f"hairdiff's ({RULE}): the views' photos are not re-drawn, only their stored labels")
    return False


def _photo(src: _Sources, original, image_id: str, v: int, label: np.ndarray, sample_id: str):
    """(the view's photo or None, whether the re-drawn label equals the stored one or None when not re-drawn)."""
    from hairdiff.extract.views import apply

    if original is None or (v and not src.views_drawn):
        return None, None
    image, again = (original.image, original.label) if v == 0 else apply(
        src.views[v - 1], image_id, original.image, original.label, src.seed)
    if np.array_equal(again, label):
        return image, True
    src.problems.append(f"{sample_id}: the label re-drawn from {src.refs[image_id].label_path} differs from the "
                        "stored one: its photo is not drawn")
    return None, False


def view_sheet(store, out_dir: Path, images: int = 4, progress: ProgressFactory = silent) -> dict:
    """Write OUT/<id>.png (one row of views per image, a colour key under it) and OUT/views.json; the report's
    `problems` say what could not be drawn as the store holds it (empty: every panel is)."""
    layout, done = store.layout, store.done_mask()
    firsts = [k for k in range(layout.num_images) if all(done[layout.views_of(k)])][:images]
    src = _sources(store)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, files = [], []
    with progress("views", len(firsts), 0) as advance:
        for k in firsts:
            image_id = store.ids[layout.sample(k, 0)]
            original = src.reader.load(src.refs[image_id]) if src.photos else None
            panels, share0 = [], None
            for v in range(layout.num_views):
                j = layout.sample(k, v)
                label = store.read_label(j)
                share = float((label == 1).sum()) / label.size
                share0 = share if v == 0 else share0
                image, same = _photo(src, original, image_id, v, label, store.ids[j])
                name = layout.names[v]
                ratio = share / share0 if share0 else None
                rows.append({"id": store.ids[j], "image": image_id, "view": name, "hair_fraction": share,
                             "ratio_to_original": ratio, "photo_drawn": image is not None,
                             "rerendered_label_matches": same})
                caption = f"{name}: hair {share:.1%}" + (f" ({ratio:.2f}x)" if v and ratio is not None else "")
                panels.append(_panel(image, label, caption + ("" if image is not None else NO_PHOTO)))
            path = out_dir / f"{image_id.replace('/', '_')}.png"
            Image.fromarray(with_key(_row(panels), VIEW_KEY)).save(path)
            files.append(str(path))
            advance(1)
    drawn = sum(r["photo_drawn"] for r in rows)
    report = {"store": store.url, "recipe": layout.recipe, "views": list(layout.names), "images": len(firsts),
              "pictures": files, "samples": rows, "as_stored": not src.problems, "problems": src.problems,
              "source": f"photos re-drawn from the dataset for {drawn} of {len(rows)} panels, stored labels on all"}
    atomic_write(out_dir / "views.json", json.dumps(report, indent=1))
    return report
