"""`pipeline serve`: the web page (Gradio, `pip install -e '.[app]'`) that segments uploaded images."""
from __future__ import annotations

import sys

from hairdiff.cli.progress import err
from hairdiff.core.errors import UsageError
from hairdiff.evaluate.config import ServeConfig


def serve(cfg: ServeConfig) -> None:
    """Open a web page that segments uploaded images with a trained head.

    Drop or pick images, see each overlay with its colour key and the hair's share of the image, download the mask
    PNGs; the model card's metrics beside them. MODEL is a run folder, a model folder (`pipeline export`) or a
    Hugging Face Hub id of one. Needs the optional extra: pip install -e '.\\[app]'. Prints the page's address last,
    then serves until Ctrl-C. Example:

        pipeline serve hairdiff-demo/run --port 7860
    """
    from hairdiff.evaluate.page import build_page, require_gradio
    from hairdiff.evaluate.segmenter import HairSegmenter

    require_gradio()  # before the model loads: a missing extra is one line
    segmenter = HairSegmenter.from_pretrained(cfg.model, device=cfg.device, model=cfg.backbone)
    page = build_page(segmenter, max_images=cfg.max_images)
    try:
        _, url, _ = page.launch(server_name=cfg.host, server_port=cfg.port or None, prevent_thread_lock=True,
                                quiet=True, ssr_mode=False, mcp_server=False, show_error=False)
    except OSError as e:  # gradio: "Cannot find empty port in range ..." or the address cannot be bound
        raise UsageError(f"--host {cfg.host} --port {cfg.port}: cannot listen there ({str(e).splitlines()[0]}): pass "
                         "another --port (0: any free one)") from None
    err.print(f"serving {cfg.model} ({segmenter.card['name']}); Ctrl-C stops")
    print(url, flush=True)
    sys.stdout.flush()
    page.block_thread()
