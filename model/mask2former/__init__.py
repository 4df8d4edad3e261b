"""Our own port of Mask2Former (Cheng et al., CVPR 2022) for semantic segmentation from cached features.

What it follows: facebookresearch/Mask2Former's MSDeformAttnPixelDecoder, MultiScaleMaskedTransformerDecoder,
HungarianMatcher and SetCriterion (semantic defaults: 100 queries, hidden 256, 8 heads, FFN 2048, 9
masked-attention layers, 6 deformable encoder layers over 3 scales, 4 points; class/mask/dice weights
2/5/5, no-object 0.1, 12544 importance-sampled points), checked module by module against transformers'
Mask2Former to 1e-5 (tests/model/mask2former/test_parity_transformers.py). No detectron2.

Where it deviates, and why:
- Input: cached Stable Diffusion levels instead of a backbone. `adapter.py` projects each level to the head
  width and sums levels that share a stride (as NVlabs/ODISE does with its SD taps); strides outside
  [4, 32] are resized to the nearest bound first (ODISE folds its stride-64 tap into stride 32).
- Mask features at stride 4 for every tap set: when the finest cached level is coarser (the "unet" taps
  stop at 8) the pixel decoder adds learned x2 upsampling stages (pixel_decoder.py says which and why).
- Multi-scale deformable attention is pure PyTorch (grid_sample), not the CUDA kernel: portable to CPU tests.
- Ignore pixels (label 255, letterbox padding, the canvas of zoomed-out views) carry no loss and no
  matching cost (HeadConfig.ignore_pixels "skip", the default): each target carries a valid map and a
  sampled point whose bilinear footprint touches an invalid pixel gets weight 0 in the matcher, BCE, dice
  and importance sampling. Mask2Former's semantic mapper leaves them in every mask's background, so they
  count as negatives ("negative", `--head ignore_pixels=negative`). Ours because an ignore pixel is one
  whose class is unknown (a letterbox pad, an unlabelled border): teaching "not hair" there teaches the
  head that padding is background, which no test image needs; BENCHMARKS.md measures both.
- Loss normalisation is Mask2Former's: mask terms over the number of target masks in the global batch, the
  class term the weighted mean over it (batch_criterion.py). One difference under DDP: the class term's
  denominator is the global batch's too (Mask2Former: each process's), and both denominators are
  all-reduced, so a batch split over DDP processes trains exactly as one process; the points of a step
  are one draw for the global batch seeded by (seed, iteration), each process keeping its samples' rows,
  so resume and DDP are exact. The per-image normalisation (each image over its own masks, then the mean)
  survives only in criterion.per_sample_loss, for bench/head_speed.py's "old step": nothing trains with it.
- The criterion and matcher run on the whole batch and every supervised prediction at once, with dense
  targets (a slot per class), and the assignment is solved on the device: a semantic image has at most
  one target per class, and for two targets the optimum has a closed form (matcher.py). SetCriterion /
  HungarianMatcher (a loop over images, scipy) stay as the reference the batched ones are tested against.
- Fewer than three distinct strides are accepted (the decoder then attends over what there is).

Modules: head (HeadConfig, presets, Mask2FormerHead, semantic_probs), adapter, pixel_decoder,
msdeform_attn, transformer_decoder, batch_criterion (BatchCriterion: what training runs), matcher (batched
costs and assignment; HungarianMatcher), criterion (the reference: SetCriterion; per_sample_loss, the old step),
point_sampling (PointDraws: one draw per step), targets (DenseTargets), position, layers.
"""
