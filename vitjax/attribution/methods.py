"""The one registry of map methods: every map vitjax draws is declared here, once.

Each :class:`Method` says what the map needs (a trained classification head,
gradients), which :class:`vitjax.RolloutOptions` fields it uses (what a
figure's footer names), the quantity its colour bar names, whether it gives one
map per image (what the perturbation test can rank pixels by), and, for the
class-specific methods, the relevance-row function that computes it
(:mod:`vitjax.attribution.relevance`). The commands' ``--method`` choices, the
visualize run, the dataset runners, the perturbation test and the figures all
read this table; a new method is one entry here plus its function.

Attention methods (``kind == "attention"``) come out of one pass of
:func:`vitjax.compute_maps`; class methods (``kind == "class"``) out of
:func:`vitjax.class_maps` (one ``jax.vjp``). Two kinds are not maps of where the
model looks, so nothing that ranks or scores maps sees them (``single`` is False,
:attr:`Method.gives_maps` is False): ``"lens"`` (what each layer already knows:
:func:`vitjax.logit_lens`, or :func:`vitjax.feature_lens` for a headless model) and
``"importance"`` (:func:`vitjax.head_importance`, an ``L x H`` table per image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from vitjax.attribution import relevance

__all__ = ["METHODS", "Method", "get", "names"]

_ALL = ("head_fusion", "discard_ratio", "start_layer", "residual")


@dataclass(frozen=True)
class Method:
    """One map method.

    Attributes:
      name: what ``--method`` and ``method=`` accept.
      kind: ``"attention"`` (from the attention alone), ``"class"`` (class-specific: needs a
        trained head and the gradient of a class logit), ``"lens"`` (each layer's residual stream
        read by the head) or ``"importance"`` (each head's ablation effect).
      options: the :class:`vitjax.RolloutOptions` fields the map uses (each layer's own map has
        no product over layers, so no start layer; head maps and most class maps use none).
      quantity: what the map's values are, for colour bars: ``"attention"`` or the class
        evidence the method computes ("generic relevance"...).
      single: one ``[gh, gw]`` map per image (the perturbation test ranks pixels by it);
        False for the stacks ``layer``/``cumulative`` ``[L, gh, gw]`` and ``heads`` ``[H, gh, gw]``.
      row: class methods: ``row(att [L, H, N, N], grad [L, H, N, N], v [N], options) -> [N]``.
      source: the paper or code the method follows.
    """

    name: str
    kind: str
    options: Tuple[str, ...]
    quantity: str
    single: bool
    source: str
    row: Optional[Callable] = None

    @property
    def needs_head(self) -> bool:
        """A class-specific map explains a class: it needs a trained classification head."""
        return self.kind == "class"

    @property
    def needs_gradients(self) -> bool:
        return self.kind == "class"

    @property
    def gives_maps(self) -> bool:
        """Maps of the patch grid (attention and class methods), what the figures' grids and the map files hold."""
        return self.kind in ("attention", "class")


METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("rollout", "attention", _ALL, "attention", True,
           "Abnar & Zuidema, 'Quantifying Attention Flow in Transformers', ACL 2020; ViT paper, appendix D.7"),
    Method("layer", "attention", ("head_fusion", "discard_ratio", "residual"), "attention", False,
           "each layer's own head-fused class-token attention"),
    Method("cumulative", "attention", _ALL, "attention", False,
           "the rollout through each layer (what the popular notebook calls each layer's map)"),
    Method("heads", "attention", (), "attention", False, "each head's class-token attention in one layer"),
    Method("generic", "class", (), "generic relevance", True,
           "Chefer, Gur & Wolf, 'Generic Attention-model Explainability...', ICCV 2021", relevance.generic_row),
    Method("grad_rollout", "class", _ALL, "grad_rollout gradient-weighted attention", True,
           "jacobgil/vit-explain grad_rollout.py", relevance.grad_rollout_row),
    Method("attention_gradcam", "class", (), "attention_gradcam Grad-CAM evidence", True,
           "Chefer, Gur & Wolf, CVPR 2021 baseline (generate_cam_attn)", relevance.attention_gradcam_row),
    Method("last_layer", "class", (), "attention", True,
           "Chefer, Gur & Wolf, CVPR 2021 baseline (attn_last_layer)", relevance.last_layer_row),
    Method("lens", "lens", (), "logit lens: the predicted class's logit read at each patch", False,
           "nostalgebraist, 'interpreting GPT: the logit lens', 2020; ViT-Prisma's per-patch lens"),
    Method("head-importance", "importance", (), "change of the target logit when the head alone is ablated", False,
           "Michel, Levy & Neubig, 'Are Sixteen Heads Really Better than One?', NeurIPS 2019"),
)}


def names(kind: Optional[str] = None, *, single: Optional[bool] = None) -> Tuple[str, ...]:
    """The method names in registry order, optionally only one ``kind`` and/or only ``single`` maps."""
    return tuple(m.name for m in METHODS.values()
                 if (kind is None or m.kind == kind) and (single is None or m.single == single))


def get(name: str, kind: Optional[str] = None) -> Method:
    """The :class:`Method` called ``name`` (of ``kind`` when given).

    Raises:
      ValueError: an unknown name, or one of another kind; one line listing the choices.
    """
    m = METHODS.get(name)
    if m is None or (kind is not None and m.kind != kind):
        raise ValueError(f"method must be one of {', '.join(names(kind))}, got {name!r}")
    return m
