"""The model: :class:`ViTConfig` and its variants (``config``), the Flax modules named like Google's
checkpoint tree (``vit``; they ``sow`` and ``perturb`` their attention and know nothing of maps), and
the jitted forward pass (``forward``)."""
