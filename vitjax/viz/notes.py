"""The sentences figures and the console print: notes on attention sinks and high-norm tokens, titles, provenance.

Text only, from the arrays of :mod:`vitjax.attribution.diagnostics` and the run's
settings; nothing here draws.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from vitjax.attribution.diagnostics import OUTLIER_RATIO, SINK_SHARE, outlier_share, outlier_tokens, sink_layers
from vitjax.data.labels import NO_HEAD

#: What every figure, the TSV and the console say of a checkpoint of random weights (``ViTConfig.random_weights``).
RANDOM_WEIGHTS = "random weights"
RANDOM_BANNER = "random weights: the predictions and maps mean nothing"
RANDOM_CONSOLE = "random weights: the predictions mean nothing"

#: What a figure and the TSV say instead of predictions, by head kind (no head, an all-zero head).
NO_PREDICTIONS = {"none": "no classification head (the model outputs features)",
                   "zero": f"{NO_HEAD} (the classifier weights are all zero)"}
_DOMINATED = 0.5  # share of the rollout's mass on outlier patches above which the figure says it is dominated


def outlier_note(token_norms, joint_map, ratio: float = OUTLIER_RATIO, *,
                 map_name: str = "rollout") -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The outlier mask of one image and the sentence its figure prints, or ``(None, None)`` when there is none.

    Args:
      token_norms: ``[gh, gw]`` (see :func:`outlier_tokens`).
      joint_map: ``[gh, gw]`` the map the note sits beside (the rollout, or a class map), same image.
      map_name: what the note calls that map (``"rollout"``, ``"generic map"``).

    Returns:
      ``(mask [gh, gw] bool, note)``; the note says "rollout dominated by ..."
      when more than half of the map's mass lies on the outlier patches.
    """
    mask = outlier_tokens(token_norms, ratio)
    if not mask.any():
        return None, None
    share = outlier_share(joint_map, mask)
    n = int(mask.sum())
    what = f"{n} high-norm token{'s' if n > 1 else ''} (\u25a1, norm > {ratio:g}\u00d7 median)"
    if share > _DOMINATED:
        return mask, f"{map_name} dominated by {what}: {share:.0%} of its mass"
    return mask, f"{what}: {share:.0%} of the {map_name}'s mass"


def _layers(numbers: Sequence[int]) -> str:
    return ("layer " if len(numbers) == 1 else "layers ") + ", ".join(str(n) for n in numbers)


def _first(k: int) -> str:
    return "layer 1" if k == 1 else f"layers 1\u2013{k}"


def sink_note(received_heads, joint_map, *, start_layer: int = 0,
              share: float = SINK_SHARE) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """The attention sinks to ring on one image's rollout and the sentence beside it, or ``(None, None)``.

    The rollout of layers ``start_layer + 1`` to L multiplies those layers' attention only: the
    mask holds the sinks of those layers (the rings drawn, :func:`vitjax.viz.drawing.mark_patches`),
    and the note accounts for every ring: the sentence's ``\u25cb`` count is the mask's count. A sink
    of a left-out layer is not ringed; the note may name it, without ``\u25cb``.

    Args:
      received_heads: ``[L, H, gh, gw]`` (see :func:`sink_layers`).
      joint_map: ``[gh, gw]`` rollout map of the same image.
      start_layer: the rollout's first layer, 0-based (:class:`vitjax.RolloutOptions`).
      share: see :func:`sink_layers`.

    Returns:
      ``(mask [gh, gw] bool or None, note or None)``. When the rollout's maximum lies on a sink
      of a layer the rollout includes, the note names that layer (or layers),
      the share of the strongest head's attention and of the whole layer's the
      patch takes, and the ``--start-layer`` that leaves those layers out: e.g.
      "rollout peak = layer-1 attention sink (○, takes 93% of head 6's
      attention, 16% of the layer's); --start-layer 1 leaves layer 1 out",
      then "; 1 more attention sink (○) in layer 10" for the other rings.
      Otherwise it counts the ringed sinks and names their layers.

    Raises:
      ValueError: as :func:`sink_layers`; ``received_heads`` not ``[L, H, gh, gw]``
        or a map of another grid.
    """
    r = np.asarray(received_heads, np.float64)
    joint = np.nan_to_num(np.asarray(joint_map, np.float64), nan=-np.inf)
    if r.ndim != 4 or joint.shape != r.shape[2:]:
        raise ValueError(f"received_heads must be [L, H, gh, gw] and joint_map [gh, gw], got {r.shape} and "
                         f"{joint.shape}")
    by_layer = sink_layers(r, share)
    if not by_layer.any():
        return None, None
    s = min(max(int(start_layer), 0), r.shape[0] - 1)
    mask = by_layer[s:].any(axis=0)  # the sinks of the layers this rollout multiplies: the rings
    i, j = np.unravel_index(int(np.argmax(joint)), joint.shape)
    here = [int(k) for k in np.nonzero(by_layer[:, i, j])[0]]  # 0-based layers where the peak is a sink
    kept = [k for k in here if k >= s]
    sentences = []
    if here:
        shown = kept or here
        top = max(shown, key=lambda k: r[k, :, i, j].max())
        head = int(np.argmax(r[top, :, i, j]))
        name, where = (f"layer-{top + 1} attention sink", "") if len(shown) == 1 else \
            (f"attention sink of {_layers([k + 1 for k in shown])}", f"layer-{top + 1} ")
        ring = "\u25cb, " if kept else ""  # a sink of a left-out layer is not ringed
        what = (f"{name} ({ring}takes {r[top, head, i, j]:.0%} of {where}head {head + 1}'s attention, "
                f"{r[top, :, i, j].mean():.0%} of the layer's)")
        if not kept:
            article = "an" if what[0] in "aeiou" else "a"
            sentences.append(f"rollout peak on {article} {what}, though start layer {s} leaves {_first(s)} out")
        else:
            last = kept[-1] + 1
            remedy = f"; --start-layer {last} leaves {_first(last)} out" if last < r.shape[0] else ""
            sentences.append(f"rollout peak = {what}{remedy}")
    others = mask.copy()
    if kept:
        others[i, j] = False  # ringed and named above
    if others.any():
        n = int(others.sum())
        layers = [int(k) + 1 for k in np.nonzero(by_layer[s:][:, others].any(axis=1))[0] + s]
        more = "more " if kept else ""
        sentences.append(f"{n} {more}attention sink{'s' if n > 1 else ''} (\u25cb, > {float(share):.0%} of one head's "
                         f"attention in {_layers(layers)})" + ("" if here else ", not the rollout's peak"))
    left = by_layer[:s].any(axis=0) & ~mask  # sinks of left-out layers only: not ringed
    left[i, j] &= not here  # the peak's was named above
    if left.any():
        n = int(left.sum())
        layers = [int(k) + 1 for k in np.nonzero(by_layer[:s][:, left].any(axis=1))[0]]
        sentences.append(f"{n} attention sink{'s' if n > 1 else ''} of {_layers(layers)} (> {float(share):.0%} of "
                         f"one head's attention), left out by start layer {s}: not ringed")
    return (mask if mask.any() else None), "; ".join(sentences)


OPTION_FIELDS = ("head_fusion", "discard_ratio", "start_layer", "residual")


def _options_text(o: Mapping[str, Any], fields: Sequence[str]) -> str:
    said = {"head_fusion": f"head fusion {o.get('head_fusion')}",
            "discard_ratio": f"discard ratio {float(o.get('discard_ratio', 0.0)):g}",
            "start_layer": f"start layer {o.get('start_layer')}",
            "residual": "residual" if o.get("residual", True) else "no residual"}
    return ", ".join(said[f] for f in OPTION_FIELDS if f in fields)


def provenance(checkpoint: str, options: Any = None, precision: Optional[str] = None, *,
               sha256: Optional[str] = None, input_size: Optional[Sequence[int]] = None,
               grid: Optional[Sequence[int]] = None,
               maps: Optional[Sequence[Tuple[str, Sequence[str]]]] = None, random_weights: bool = False) -> str:
    """The line that says what made a figure, for ``footer=``.

    Args:
      checkpoint: the checkpoint's name (e.g. ``"ViT-B_16-224.npz"``).
      options: a :class:`vitjax.RolloutOptions` (or its ``to_dict()``).
      precision: the matmul precision (``"float32"``, ``"tensorfloat32"``, ``"bfloat16"``).
      sha256: the checkpoint file's hex SHA-256; its first 12 digits are shown.
      input_size: the model's input ``(height, width)`` in pixels (or one int for a square);
        grid: its patch grid ``(gh, gw)``: shown as ``"518\u00d7518 px input, 37\u00d737 patches"``.
      maps: which options apply to which panel: ``(panel, fields)`` pairs, ``fields`` the
        :data:`OPTION_FIELDS` that panel's map uses; a panel that uses none says so. Default:
        one ``("rollout", OPTION_FIELDS)``.
      random_weights: the checkpoint holds random weights (``ViTConfig.random_weights``, a
        ``vitjax-synthetic`` file): said right after its name, ``"(sha256 …; random weights)"``.

    Returns:
      e.g. ``"ViT-B_16-224.npz (sha256 3a4b…) · 224×224 px input, 14×14 patches · rollout: head
      fusion mean, discard ratio 0, start layer 0, residual · precision float32"``, or with
      ``maps=[("joint map", OPTION_FIELDS), ("head maps", ())]``: ``"… · joint map: head fusion
      mean, …, residual · head maps: no rollout options · …"``.
    """
    about = ([f"sha256 {sha256[:12]}"] if sha256 else []) + ([RANDOM_WEIGHTS] if random_weights else [])
    parts = [str(checkpoint) + (f" ({'; '.join(about)})" if about else "")]
    if input_size is not None:
        hw = (int(input_size),) * 2 if np.ndim(input_size) == 0 else tuple(int(v) for v in input_size)
        parts.append(f"{hw[0]}\u00d7{hw[1]} px input" + (f", {int(grid[0])}\u00d7{int(grid[1])} patches"
                                                          if grid is not None else ""))
    if options is not None:
        o: Mapping[str, Any] = options.to_dict() if hasattr(options, "to_dict") else dict(options)
        for panel, fields in (maps if maps is not None else [("rollout", OPTION_FIELDS)]):
            parts.append(f"{panel}: {_options_text(o, fields) or 'no rollout options'}")
    if precision:
        parts.append(f"precision {precision}")
    return " \u00b7 ".join(parts)
