"""Divergence with finite numbers (docs/algorithms.md §9): the test or train loss above
federation.divergence_factor x its best so far for federation.divergence_patience evaluations in a
row stops the run (or flags it), and a resumed run decides as the same run without a stop."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from actors.cli import main
from fedlora_ray.engine.callbacks import blow_up
from tests.conftest import ROOT

SMOKE = str(ROOT / "jobs/configs/smoke.yaml")
# issue 19's case: the smoke config at the largest allowed steps (its losses stay finite)
WILD = ["runtime.backend=serial", "runtime.progress=false", "federation.lr=1", "algorithm.server_lr=10"]


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_blow_up_counts_values_above_factor_times_the_best_before_each():
    assert blow_up([2.0, 25.0, 30.0, 40.0], 10, 3) == (3, 40.0, 2.0)
    assert blow_up([2.0, 25.0, 30.0], 10, 3) is None  # two in a row only
    assert blow_up([2.0, 25.0, 3.0, 40.0, 50.0], 10, 3) is None  # 3.0 broke the run of high values
    assert blow_up([2.0, 25.0, None, 30.0, math.nan, 40.0], 10, 3) == (3, 40.0, 2.0)  # gaps skipped
    assert blow_up([2.0, 1.0, 15.0, 12.0], 10, 2) == (2, 12.0, 1.0)  # the best so far moves down
    assert blow_up([0.0, 5.0, 6.0], 10, 1) is None  # a best of 0 compares nothing
    assert blow_up([], 10, 1) is None and blow_up([None, None], 10, 1) is None


def test_a_finite_blow_up_stops_the_run_naming_the_loss_and_the_fields(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", SMOKE, "--out", str(out), *_sets(*WILD, "federation.rounds=10")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "the run diverged" in line and "federation.divergence_factor = 10" in line
    assert "federation.lr (now 1)" in line and "algorithm.server_lr (now 10)" in line
    stopped = int(line.split("round ", 1)[1].split(":")[0])
    logged = pd.read_parquet(out / "rounds.parquet")
    assert logged["round"].tolist() == list(range(1, stopped))  # the logs end at the last good round
    assert stopped < 10 and not logged["diverged"].any()
    assert logged[["train_loss", "test_loss"]].notna().all().all()  # all finite: the old guard let it run


def test_flagged_then_resumed_decides_as_one_go(tmp_path):
    """The guard reads the logged history, so a run resumed after a stop flags exactly the
    rounds that the same run flags in one go."""
    flag = [*WILD, "federation.on_divergence=flag", "checkpoint.every=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["run", SMOKE, "--out", str(one), *_sets(*flag, "federation.rounds=8")]) == 0
    assert main(["run", SMOKE, "--out", str(two), *_sets(*flag, "federation.rounds=3")]) == 0
    assert main(["resume", str(two), *_sets("federation.rounds=8")]) == 0
    columns = ["round", "train_loss", "test_loss", "test_accuracy", "diverged"]
    a, b = (pd.read_parquet(p / "rounds.parquet")[columns] for p in (one, two))
    pd.testing.assert_frame_equal(a, b)
    flagged = a["diverged"].tolist()
    assert any(flagged) and not any(flagged[:3])  # the blow-up is flagged after the resume point too
    assert flagged.index(True) >= 3  # three values above the factor are needed


@pytest.mark.parametrize("factor", ["0", "1e9"])
def test_a_factor_of_zero_or_a_huge_one_lets_the_blow_up_run(tmp_path, factor):
    out = tmp_path / "run"
    sets = _sets(*WILD, "federation.rounds=6", f"federation.divergence_factor={factor}")
    assert main(["run", SMOKE, "--out", str(out), *sets]) == 0
    assert not pd.read_parquet(out / "rounds.parquet")["diverged"].any()
