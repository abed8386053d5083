"""Entry point for `ray job submit --working-dir . -- python jobs/run.py CONFIG.yaml [--out DIR]`.

Same arguments as `fedlora-ray run`; `python jobs/run.py --resume RUN_DIR [--set
federation.rounds=N]` continues a run from its newest checkpoint, as `fedlora-ray resume` does;
`python jobs/run.py sweep SPEC.yaml --out ROOT` runs a sweep, as `fedlora-ray sweep` does.
The working directory's root goes on sys.path so the submitted copy of the code is the one that
runs, installed or not.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.cli import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--resume"]:
        sys.exit(main(["resume", *args[1:]]))
    if args[:1] in (["sweep"], ["compare"], ["report"]):
        sys.exit(main(args))
    sys.exit(main(["run", *args]))
