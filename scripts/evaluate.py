"""How well a ViT's attention maps match the objects of a dataset; see `python scripts/evaluate.py --help`."""
import sys

from vitjax.cli.evaluate import main

sys.exit(main(sys.argv[1:]))
