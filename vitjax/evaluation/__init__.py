"""Evaluation over datasets: the generic resumable runner (``runner``), localisation against object
annotations (``localisation``, scored by ``metrics``, written by ``report``) and the perturbation test
(``perturbation``)."""
