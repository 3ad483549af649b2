"""Attribution: :class:`RolloutOptions` (``options``), the one registry of map methods (``methods``), the
rollout maths (``rollout``), class-specific relevance rows (``relevance``), maps from a model (``maps``),
class maps (``class_maps``) and the diagnostics of attention sinks and high-norm tokens (``diagnostics``)."""
