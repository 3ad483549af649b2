"""Figures: drawing primitives (``drawing``), the figures (``figures``), the sentences they print and
their provenance (``notes``), and the visualize run (``run``: images -> maps -> figures and files)."""
