"""Entry point for `ray job submit --working-dir . -- python jobs/run.py CONFIG.yaml [--out DIR]`.

Same arguments as `fedlora-ray run`. The working directory's root goes on sys.path so the
submitted copy of the code is the one that runs, installed or not.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
