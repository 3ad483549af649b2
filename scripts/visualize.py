"""Attention-map figures of a ViT checkpoint on photos; see `python scripts/visualize.py --help`."""
import sys

from vitjax.cli.visualize import main

sys.exit(main(sys.argv[1:]))
