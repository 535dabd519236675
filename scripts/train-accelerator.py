#!/usr/bin/env python3
"""Entry point of the accelerator run for a bare ``python3`` (torch, numpy, Pillow, safetensors, tqdm,
transformers): puts the repository on the import path and runs ``generator.accelerator``.

    python3 scripts/train-accelerator.py BUNDLE OUT --time-budget 480
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.accelerator import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
