"""The perturbation test of Chefer et al. (CVPR 2021); see `python scripts/perturbation.py --help`."""
import sys

from vitjax.cli.perturbation import main

sys.exit(main(sys.argv[1:]))
