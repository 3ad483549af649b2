"""The options of attention rollout, in one frozen, validated object.

Every map function, :func:`vitjax.compute_maps`, the CLI and the saved maps'
metadata take the same :class:`RolloutOptions`; it is checked once, when it is
made, and is hashable, so it is the static argument of the jitted functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

__all__ = ["HEAD_FUSIONS", "RolloutOptions", "as_options"]

HEAD_FUSIONS = ("mean", "max", "min")


@dataclasses.dataclass(frozen=True)
class RolloutOptions:
    """How attention is turned into maps (attention rollout and the per-layer maps).

    Attributes:
      head_fusion: how one layer's heads become one matrix: ``"mean"`` (Abnar &
        Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020; the ViT
        paper's appendix D.8), ``"max"`` or ``"min"`` (jacobgil/vit-explain).
      discard_ratio: per image and layer, the fraction in [0, 1) of the lowest
        fused weights set to zero before the residual is added, never the
        class-to-class entry (jacobgil/vit-explain, without its first-image-only
        and unnormalised-row faults). Changing it does not recompile (only
        ``discard_ratio > 0`` is part of the compiled program).
      start_layer: layers before it (0-based) are left out of the rollout;
        Chefer, Gur & Wolf's evaluation code (CVPR 2021) uses 1 for the rollout
        baseline. Must be below the model's number of layers.
      residual: add the identity for the residual connection before the rows
        are renormalised (Abnar & Zuidema); False multiplies the bare
        renormalised attentions.
      num_prefix_tokens: tokens before the patch tokens (class token, then
        registers or a distillation token); they are never map columns. Set
        from the model by :meth:`for_config`.
      class_token: the map is the class token's row; False for
        global-average-pooled models, whose map is the mean over patch rows.

    Raises:
      ValueError: on construction, naming the field and the value it got.
    """

    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    start_layer: int = 0
    residual: bool = True
    num_prefix_tokens: int = 1
    class_token: bool = True

    def __post_init__(self):
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {self.head_fusion!r}")
        try:
            ratio = float(self.discard_ratio)
        except (TypeError, ValueError):
            ratio = float("nan")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"discard_ratio must be a number in [0, 1), got {self.discard_ratio!r}")
        for name in ("start_layer", "num_prefix_tokens"):
            value = getattr(self, name)
            integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            if isinstance(value, bool) or not integral or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.class_token and self.num_prefix_tokens < 1:
            raise ValueError("class_token=True needs num_prefix_tokens >= 1 (the class token is token 0)")
        object.__setattr__(self, "discard_ratio", ratio)
        object.__setattr__(self, "residual", bool(self.residual))
        object.__setattr__(self, "class_token", bool(self.class_token))

    def for_config(self, config) -> RolloutOptions:
        """A copy whose token layout (prefix tokens, class token) is that of ``config``.

        Raises:
          ValueError: ``start_layer`` not below the model's ``num_layers``.
        """
        self.check_layers(config.num_layers)
        return dataclasses.replace(self, num_prefix_tokens=config.num_prefix_tokens, class_token=config.class_token)

    def check_layers(self, num_layers: int) -> None:
        """Raises ValueError unless ``start_layer < num_layers`` (at least one layer is rolled out).

        A start layer of L or more would leave the identity: an all-zero map
        that looks like a result.
        """
        if self.start_layer >= max(num_layers, 1):
            raise ValueError(f"start_layer must be in [0, {max(num_layers - 1, 0)}] (the model has {num_layers} "
                             f"layers; 0-based), got {self.start_layer}")

    def replace(self, **changes) -> RolloutOptions:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """Plain ``{field: value}`` for metadata (JSON/msgpack-safe)."""
        return dataclasses.asdict(self)

    @property
    def static(self) -> RolloutOptions:
        """The part that shapes the compiled program: ``discard_ratio`` reduced to 0 or 0.5 (on/off).

        The jitted functions take this as their static argument and the real
        ratio, start layer and residual flag as traced values, so changing
        those does not recompile.
        """
        return dataclasses.replace(self, discard_ratio=0.5 if self.discard_ratio > 0 else 0.0, start_layer=0,
                                   residual=True)


def as_options(options: Optional[RolloutOptions], config=None) -> RolloutOptions:
    """The one coercion of an ``options`` argument: None -> the defaults, then (given a
    :class:`vitjax.ViTConfig`) :meth:`RolloutOptions.for_config`.

    Raises:
      ValueError: anything but a :class:`RolloutOptions` or None; see :meth:`RolloutOptions.for_config`.
    """
    if options is None:
        options = RolloutOptions()
    elif not isinstance(options, RolloutOptions):
        raise ValueError(f"options must be a vitjax.RolloutOptions, got {type(options).__name__}")
    return options if config is None else options.for_config(config)
