"""`HairSegmenter`: a trained head with the backbone and the extraction settings it was trained with, as a Python
object in the Hugging Face style (`from_pretrained`, call it on images, `save_pretrained`, `push_to_hub`).

It loads from a run folder (`pipeline train`'s --out: the head `pipeline eval` scores), from a portable model
folder (model/portable.py: config.json, model.safetensors, README.md) or from a Hub id of one, through
huggingface_hub's ModelHubMixin. `pipeline predict` segments with it, so the command's masks and the API's are
the same by construction. Every mistake is a HairdiffError (core/errors.py) with the command line's message.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin

from hairdiff.cache import fingerprint
from hairdiff.cache.geometry import letterbox_image, unletterbox
from hairdiff.cache.quantize import round_trip
from hairdiff.core.devices import resolve_device, resolve_dtype
from hairdiff.core.errors import ModelFolderError, RunMismatchError, UsageError
from hairdiff.evaluate.config import DEFAULT_BATCH_SIZE, check_run_dir
from hairdiff.evaluate.inputs import image_name, to_rgb_array
from hairdiff.model.portable import (CARD, CONFIG, NOT_A_MODEL, WEIGHTS, is_run_folder, model_record, model_source,
                                     read_model_record, trained_head)
from hairdiff.model.trained import head_source, load_head


@dataclass
class Segmentation:
    """One image's result, at the image's own height and width."""

    mask: np.ndarray  # uint8 (H, W): 0 background, 1 hair (the per-pixel class, as `pipeline predict` writes it)
    probability: np.ndarray  # float32 (H, W): the hair class's share of the two class scores (mask: above 0.5)
    image: str  # the path, the PIL image's file name, or "image K (...)" for arrays

    @property
    def hair_fraction(self) -> float:
        return float(self.mask.mean())


def segment(fx, head, images: list[np.ndarray], resolution: int) -> list[torch.Tensor]:
    """Class scores (K, H, W) at each image's own size, from one backbone pass over the batch."""
    from hairdiff.extract.loading import to_model_input
    from hairdiff.model.mask2former.head import semantic_probs

    bb = fx.bb
    x = to_model_input([letterbox_image(img, resolution) for img in images], bb.device, bb.dtype)
    with torch.inference_mode():
        # The head trained on features as its store gave them back (float16, or int8's round trip), as float32.
        feats = {k: torch.from_numpy(round_trip(v.cpu().numpy(), fx.precision)).to(bb.device).float()
                 for k, v in fx(x).items()}
        prob = semantic_probs(head(feats), out_size=(resolution, resolution))
    return [unletterbox(prob[j:j + 1], img.shape[:2], img.shape[:2])[0] for j, img in enumerate(images)]


def result(prob: torch.Tensor, name: str) -> Segmentation:
    """A Segmentation from (2, H, W) class scores (Mask2Former's do not sum to 1: the probability is hair's share)."""
    total = prob.sum(0)
    share = torch.where(total > 0, prob[1] / total.clamp_min(torch.finfo(prob.dtype).tiny), torch.zeros_like(total))
    return Segmentation(prob.argmax(0).to(torch.uint8).cpu().numpy(), share.float().cpu().numpy(), name)


def _model_arg(identity: dict, override: str | None) -> str:
    if override:
        return str(override)
    if identity.get("kind") == "tiny":
        return "tiny"
    if identity.get("kind") == "hub":
        return identity["name"]
    raise RunMismatchError(f"the head's backbone was a local model ({identity.get('name')}): pass its folder with "
                           "--model /path/to/model (Python: model=\"/path/to/model\")")


def load_extractor(meta: dict, record: str, device, dtype=None, model: str | None = None):
    """The feature extractor that reproduces the head's training features (meta: the head's provenance), checked
    by fingerprint. dtype: the backbone's compute dtype (None: the one the features were computed in; another is
    allowed, the features then differ by its rounding, and every other setting must still match)."""
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor

    fi = meta["fingerprint_inputs"]
    if fingerprint(fi) != meta["fingerprint"]:
        raise RunMismatchError(f"{record}: its fingerprint_inputs do not hash to its fingerprint (edited by hand?): "
                               "use the files as hairdiff wrote them")
    dtype = getattr(torch, fi["compute_dtype"]) if dtype is None else (
        resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype)
    identity = fi["model"]
    bb = load_backbone(_model_arg(identity, model), device=device, dtype=dtype, revision=identity.get("revision"))
    fx = FeatureExtractor.from_fingerprint_inputs(bb, fi)
    mine = dict(fx.fingerprint_inputs)
    if mine["compute_dtype"] != fi["compute_dtype"]:  # only where a dtype was asked for (the default is the head's)
        mine["compute_dtype"] = fi["compute_dtype"]  # the same network, computed at another precision
    if fingerprint(mine) != meta["fingerprint"]:
        differ = sorted(k for k in set(mine) | set(fi) if mine.get(k) != fi.get(k))
        raise RunMismatchError(f"{record}: the backbone and settings loaded now do not reproduce the features the head "
                               f"was trained on (differs in: {', '.join(differ)}; trained: {fi.get('model')}, now: "
                               f"{mine.get('model')}); pass the head's own model with --model (Python: model=...)")
    return fx


class HairSegmenter(ModelHubMixin, library_name="hairdiff", pipeline_tag="image-segmentation",
                    tags=["hairdiff", "hair-segmentation", "mask2former", "stable-diffusion-features"]):
    """Segments hair: `segmenter(images)` takes one or a list of PIL images, numpy arrays (H, W, 3 uint8) or paths
    and returns, per image, a Segmentation (`.mask`, `.probability`), in batches of `batch_size`."""

    # Parameter names differ from config.json's keys: ModelHubMixin hands a config key of the same name to
    # _from_pretrained as an argument.
    def __init__(self, head_module, extractor, source: dict, facts: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, run: str | None = None, metrics: str | None = None):
        if batch_size < 1:
            raise UsageError(f"batch_size {batch_size}: use 1 or more")
        self.head, self.extractor, self.source, self.batch_size = head_module, extractor, source, batch_size
        self._card, self._run, self._metrics = facts, run, metrics

    @property
    def resolution(self) -> int | None:
        """The size (px) images are letterboxed to for the backbone, as the head's features were."""
        if self.extractor is not None:
            return self.extractor.resolution
        return self.source["meta"]["fingerprint_inputs"].get("resolution")

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def _build(cls, source: dict, device, dtype, model, backbone: bool, **kw) -> "HairSegmenter":
        dev = resolve_device(str(device))
        head, meta = load_head(Path(source["record"]).parent, device=str(dev), source=source)
        fx = load_extractor(meta, source["record"], dev, dtype, model) if backbone else None
        return cls(head, fx, source, **kw)

    @classmethod
    def from_run(cls, run, *, device: str = "auto", dtype=None, model: str | None = None, best: bool = True,
                 batch_size: int = DEFAULT_BATCH_SIZE, backbone: bool = True, metrics: str | None = None,
                 say=None) -> "HairSegmenter":
        """The head `pipeline eval` scores of a `pipeline train` run (RUN/best/ when it validated and `best`, else
        the final head, else an unfinished run's latest checkpoint); say(message) is told which. backbone=False:
        the head alone (to save or push it; calling it is an error). metrics: the evaluation its model card shows
        (None: found beside the run)."""
        check_run_dir(run)
        source = head_source(Path(run), best)
        if say is not None:
            say(describe_head(source))
        return cls._build(source, device, dtype, model, backbone, batch_size=batch_size, run=str(run),
                          metrics=metrics)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, device: str = "auto", dtype=None,
                        model: str | None = None, best: bool = True, batch_size: int = DEFAULT_BATCH_SIZE,
                        backbone: bool = True, revision: str | None = None, cache_dir=None, token=None,
                        local_files_only: bool = False, force_download: bool = False) -> "HairSegmenter":
        """A model folder (`pipeline export`, `save_pretrained`), a Hugging Face Hub id of one, or a run folder.
        model: where to load the backbone from instead of its recorded name (a local folder); dtype: its compute
        dtype (default: the one the head's features were computed in)."""
        from hairdiff.evaluate import hub

        name = str(pretrained_model_name_or_path)
        path = Path(name).expanduser()
        kw = {"device": device, "dtype": dtype, "model": model, "batch_size": batch_size, "backbone": backbone}
        if is_run_folder(path):
            return cls.from_run(path, best=best, **kw)
        if path.is_dir():
            read_model_record(path)  # not a model: one line, before huggingface_hub reads anything
            name = str(path)
        elif path.exists() or hub.looks_like_path(name):
            what = "a file, not a folder" if path.exists() else "no such folder"
            raise ModelFolderError(f"{name}: {what}: {NOT_A_MODEL}")
        else:
            read_model_record(hub.hub_file(name, CONFIG, revision, cache_dir, token, local_files_only).parent)
        hub_kw = {"revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only,
                  "force_download": force_download}
        with hub.failures_named(name, local=path.is_dir()):
            return super().from_pretrained(name, **hub_kw, **kw)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         config=None, device="auto", dtype=None, model=None, batch_size=DEFAULT_BATCH_SIZE,
                         backbone=True) -> "HairSegmenter":
        """ModelHubMixin's loading hook: the folder's (or the Hub snapshot's) files, checked, then the backbone."""
        from hairdiff.evaluate import hub

        folder = Path(model_id)
        if not folder.is_dir():  # a Hub id: its weights land beside the config.json already fetched
            folder = hub.hub_file(model_id, WEIGHTS, revision, cache_dir, token, local_files_only,
                                  force_download).parent
        record = read_model_record(folder)
        return cls._build(model_source(folder, record), device, dtype, model, backbone, facts=record["card"],
                          batch_size=batch_size)

    # ---------------------------------------------------------------------------------------- segmenting
    def __call__(self, images, batch_size: int | None = None):
        """One image -> a Segmentation; a list (or tuple) -> a list, in order. Decoded a batch at a time."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        size = batch_size or self.batch_size
        out: list[Segmentation] = []
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            arrays = [to_rgb_array(x, start + j) for j, x in enumerate(chunk)]
            out += self.segment_arrays(arrays, [image_name(x, start + j) for j, x in enumerate(chunk)])
        return out[0] if single else out

    def segment_arrays(self, images: list[np.ndarray], names: list[str] | None = None) -> list[Segmentation]:
        """One backbone pass over decoded (H, W, 3) uint8 images."""
        if self.extractor is None:
            raise UsageError("this HairSegmenter was loaded without its backbone (backbone=False): load it again "
                             "without backbone=False to segment images")
        names = names or [f"image {k}" for k in range(len(images))]
        return [result(p, n) for p, n in zip(segment(self.extractor, self.head, images, self.resolution), names)]

    # -------------------------------------------------------------------------------------------- saving
    @property
    def card(self) -> dict:
        """The model card's facts (evaluate/card.py), gathered from the run on first use."""
        if self._card is None:
            from hairdiff.evaluate.card import card_facts

            self._card = card_facts(Path(self._run), self.source, self._metrics)
        return self._card

    @property
    def record(self) -> dict:
        """What config.json holds."""
        return model_record(self.source, self.card)

    def save_pretrained(self, save_directory, *, push_to_hub: bool = False, repo_id: str | None = None,
                        config: dict | None = None, model_card_kwargs: dict | None = None,
                        **push_kwargs) -> str | None:
        """Write config.json, model.safetensors and README.md (the model card) into `save_directory`, through
        huggingface_hub's ModelHubMixin; push_to_hub: then publish the folder as `repo_id` (default: its name).
        config.json is always this head's record (`config` is accepted for the mixin's own calls and ignored)."""
        from hairdiff.evaluate.hub import check_model_out

        folder = Path(save_directory)
        check_model_out(folder)
        folder.mkdir(parents=True, exist_ok=True)
        card_kwargs = {"where": str(folder), **(model_card_kwargs or {})}
        # Written beside, then moved in with config.json last: until then the folder is not a model (a loud
        # error), never a config that describes other weights.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".partial-") as tmp:
            super().save_pretrained(tmp, config=self.record, model_card_kwargs=card_kwargs)
            (folder / CONFIG).unlink(missing_ok=True)
            umask = os.umask(0)
            os.umask(umask)
            for name in (WEIGHTS, CARD, CONFIG):
                os.chmod(Path(tmp) / name, 0o666 & ~umask)  # as any file written here (the writer may use 0600)
                os.replace(Path(tmp) / name, folder / name)
        if push_to_hub:
            return self.push_to_hub(repo_id or folder.name, **push_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.head, str(Path(save_directory) / WEIGHTS))

    def generate_model_card(self, *args, where: str = "DIR", **kwargs) -> ModelCard:
        """README.md: huggingface_hub's metadata block (library, task, tags, base model, the evaluation as a
        model-index) over evaluate/card.py's text."""
        from hairdiff.evaluate.card import card_text, eval_results

        data = ModelCardData(**self._hub_mixin_info.model_card_data.to_dict())
        if self.card["backbone"].get("kind") == "hub":
            data.base_model = self.card["backbone"]["name"]
        data.eval_results = eval_results(self.card)
        if data.eval_results:
            data.model_name = self.card["name"]  # the model-index needs a name
        head = trained_head(self.source)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_text(self.card, head, where)}")

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        """Publish the model folder as `repo_id` (huggingface_hub's own path: create the repository, save, upload in
        one commit). A Hub that cannot be reached, or refuses, is one HubPushError line."""
        from hairdiff.evaluate.hub import push_failures_named

        kwargs.setdefault("model_card_kwargs", {"where": repo_id})
        with push_failures_named(repo_id):
            return super().push_to_hub(repo_id, **kwargs)


def describe_head(source: dict) -> str:
    """One line saying which head of a run is used (eval and predict say it alike)."""
    if source["source"] == "best":
        return (f"the best validated head: {source['weights']} (iteration {source['iteration']}, val "
                f"{source['metric']} {source['score']:.2f}); --no-best takes the final head")
    if source["source"] == "final":
        return f"the final head: {source['weights']} (iteration {source['iteration']})"
    return f"the latest checkpoint of an unfinished run: {source['weights']} (iteration {source['iteration']})"
