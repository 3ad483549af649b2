"""The commands, one module each (``visualize``, ``evaluate``, ``perturbation``, ``synthetic``), and the
argument helpers they share (``common``). Each is ``main(argv) -> int`` and a console script."""
