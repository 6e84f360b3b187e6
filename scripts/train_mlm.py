"""Stand-alone entry for `viz.train.mlm`: the same options as `python -m viz train mlm` (earlier stages used it)."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from viz.train import mlm  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train the minilm-mlm masked-LM head (+ top encoder layers).")
    mlm.add_arguments(parser)
    sys.exit(mlm.main(parser.parse_args()))
