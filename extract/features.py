"""One pass of the frozen backbone per image, with forward hooks capturing the chosen taps."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from hairdiff.cache.geometry import preprocessing_record
from hairdiff.cache.levels import LevelSpec
from hairdiff.core.errors import UsageError
from hairdiff.core.recipe import FULL
from hairdiff.extract.taps import Tap, with_geometry

NOISE_RULE = "one N(0,1) tensor from torch.Generator(cpu).manual_seed(seed), shared by every image"
LATENT_RULE = "vae posterior mean x scaling_factor"


class _Stop(Exception):
    """Raised by the hook of a network's last kept tap: nothing after it needs to run."""


class FeatureExtractor:
    def __init__(self, backbone, taps: list[Tap], prompt: str = FULL.prompt, timestep: int = FULL.timestep,
                 resolution: int = FULL.resolution, seed: int = FULL.seed, precision: str = "fp16"):
        if resolution < 64 or resolution % 64:
            raise UsageError(f"--resolution {resolution}: use a multiple of 64 of at least 64 (the UNet downsamples "
                             f"64x)")
        steps = int(backbone.scheduler.config.num_train_timesteps)
        if not 0 <= timestep < steps:
            raise UsageError(f"--timestep {timestep}: this model's schedule has steps 0..{steps - 1}")
        self.bb, self.prompt, self.timestep, self.resolution, self.seed = backbone, prompt, timestep, resolution, seed
        self.precision = precision  # the stored precision: part of what a store's features are
        dev, dt = backbone.device, backbone.dtype
        self.scaling = float(backbone.vae.config.scaling_factor)
        with torch.inference_mode():
            length = min(backbone.tokenizer.model_max_length, backbone.text_encoder.config.max_position_embeddings)
            ids = backbone.tokenizer(prompt, padding="max_length", max_length=length,
                                     truncation=True, return_tensors="pt").input_ids
            self.prompt_embedding = backbone.text_encoder(ids.to(dev))[0].to(dt)  # computed once
        lat = resolution // 8
        gen = torch.Generator("cpu").manual_seed(seed)
        self.noise = torch.randn((1, 4, lat, lat), generator=gen).to(dev, dt)
        self.t = torch.tensor([timestep], device=dev, dtype=torch.long)
        self.timer = None  # a StageClock, when the caller wants per-network times
        self._fp32: dict[str, torch.nn.Module] = {}  # float32 copies for recomputing overflowed samples
        self.taps = list(taps)
        self._captured: dict[str, torch.Tensor] = {}
        self._last: dict[str, str] = {}
        self._order: list[str] = []
        shapes = self._dry_run()
        self.taps = with_geometry(self.taps, shapes, 64)
        # last tap of each network in execution order: the point where that network may stop (never the VAE
        # encoder: the UNet needs its latent)
        for name in self._order:
            network = next(t.network for t in self.taps if t.name == name)
            if network != "vae_encoder":
                self._last[network] = name

    def _hook(self, tap: Tap, roots: dict):
        mod = (roots["unet"] if tap.network == "unet" else roots["vae"]).get_submodule(tap.module_path)

        def keep(x):
            self._captured[tap.name] = x
            if tap.name not in self._order:
                self._order.append(tap.name)
            if self._last.get(tap.network) == tap.name:
                raise _Stop

        if tap.kind == "input":
            return mod.register_forward_pre_hook(lambda m, args: keep(args[0]))
        return mod.register_forward_hook(lambda m, args, out: keep(out[0] if isinstance(out, tuple) else out))

    def _dry_run(self) -> dict[str, tuple]:
        """Measure every tap's channels and stride on a 64x64 input (cheap even for SD 1.x)."""
        saved = (self.resolution, self.noise)
        self.resolution, self.noise = 64, torch.zeros((1, 4, 8, 8), device=self.bb.device, dtype=self.bb.dtype)
        try:
            x = torch.zeros((1, 3, 64, 64), device=self.bb.device, dtype=self.bb.dtype)
            feats = self(x)
        finally:
            self.resolution, self.noise = saved
        return {k: tuple(v.shape) for k, v in feats.items()}

    def _needs(self, network: str) -> bool:
        return any(t.network == network for t in self.taps)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._call(images, self.bb.vae, self.bb.unet, self.bb.dtype, self.bb.dtype)

    @torch.inference_mode()
    def recompute_fp32(self, images: torch.Tensor, full: bool = False) -> dict[str, torch.Tensor]:
        """The same features with the VAE in float32 (full: the UNet too), for samples whose half-precision
        pass overflowed (the SD VAE is known to on some inputs). Float32 copies are made on first use."""
        vae = self._float32("vae")
        unet = self._float32("unet") if full else self.bb.unet
        return self._call(images, vae, unet, torch.float32, torch.float32 if full else self.bb.dtype)

    def _float32(self, name: str) -> torch.nn.Module:
        if name not in self._fp32:
            import copy

            module = copy.deepcopy(getattr(self.bb, name))
            for m in module.modules():  # a compiled forward belongs to the half-precision original
                m.__dict__.pop("forward", None)
            self._fp32[name] = module.float()
        return self._fp32[name]

    def _call(self, images, vae, unet, vae_dtype, unet_dtype) -> dict[str, torch.Tensor]:
        # Hooks live only during the call, so several extractors can share one backbone.
        hooks = [self._hook(t, {"vae": vae, "unet": unet}) for t in self.taps]
        try:
            return self._forward(images, vae, unet, vae_dtype, unet_dtype)
        finally:
            for h in hooks:
                h.remove()

    def _span(self, stage: str):
        return self.timer.gpu(stage) if self.timer is not None else nullcontext()

    def _forward(self, images, vae, unet, vae_dtype, unet_dtype) -> dict[str, torch.Tensor]:
        bb = self.bb
        self._captured = {}
        images = images.to(bb.device, vae_dtype)
        with self._span("vae"):
            latents = vae.encode(images).latent_dist.mean * self.scaling  # encoder taps fire here
        b = latents.shape[0]
        if self._needs("unet"):
            # add_noise's own arithmetic, with its coefficients prepared once: the scheduler would copy its
            # table to the device every call, a host-device sync that stalls the pipeline.
            sa, sb = self._noise_coefficients(unet_dtype)
            noisy = sa * latents.to(unet_dtype) + sb * self.noise.to(unet_dtype).expand(b, -1, -1, -1)
            with self._span("unet"):
                try:
                    unet(noisy, self.t.expand(b), encoder_hidden_states=self.prompt_embedding.to(unet_dtype).expand(
                        b, -1, -1))
                except _Stop:  # the last kept tap was reached: the rest of the network is not needed
                    pass
        if self._needs("vae_decoder"):
            with self._span("vae_decoder"):
                try:
                    vae.decode(latents / self.scaling)
                except _Stop:  # the last kept tap was reached: the rest of the network is not needed
                    pass
        return {t.name: self._captured[t.name] for t in self.taps}

    def _noise_coefficients(self, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"_coef_{dtype}"
        if key not in self.__dict__:
            ac = self.bb.scheduler.alphas_cumprod.to(device=self.bb.device, dtype=dtype)
            self.__dict__[key] = (ac[self.t] ** 0.5, (1 - ac[self.t]) ** 0.5)
        return self.__dict__[key]

    @property
    def levels(self) -> list[LevelSpec]:
        r = self.resolution
        return [LevelSpec(t.name, t.stride, t.channels, r // t.stride, r // t.stride) for t in self.taps]

    @property
    def fingerprint_inputs(self) -> dict:
        s = self.bb.scheduler.config
        return {
            "model": self.bb.identity, "prompt": self.prompt, "timestep": self.timestep,
            "resolution": self.resolution, "taps": [t.name for t in self.taps],
            "compute_dtype": str(self.bb.dtype).replace("torch.", ""), "noise": {"seed": self.seed, "rule": NOISE_RULE},
            "latent": LATENT_RULE,
            "schedule": {k: s.get(k) for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")},
            "preprocessing": preprocessing_record(self.resolution), "store_precision": self.precision,
        }

    @classmethod
    def from_fingerprint_inputs(cls, backbone, inputs: dict) -> "FeatureExtractor":
        """The extractor that recomputes the features a store (or a run) records: predict's way back."""
        from hairdiff.extract.taps import resolve_taps

        return cls(backbone, resolve_taps(",".join(inputs["taps"]), backbone), prompt=inputs["prompt"],
                   timestep=inputs["timestep"], resolution=inputs["resolution"], seed=inputs["noise"]["seed"],
                   precision=inputs.get("store_precision", "fp16"))
