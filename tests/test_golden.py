"""Behaviour kept: every valid scheme x compressor x controller x sampling combination
reproduces the Parquet files written before the run became an explicit state, bit for bit.

The one intended change: HetLoRA with independent sampling now aggregates with the unbiased
weights p_i / q_i (its golden file was rewritten with that fix)."""

import pandas as pd
import pytest

from tests.golden_cases import GOLDEN, cases, run_case

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name, tmp_path):
    rounds, clients = run_case(CASES[name], tmp_path / "run")
    for got, kind in ((rounds, "rounds"), (clients, "clients")):
        want = pd.read_parquet(GOLDEN / f"{name}.{kind}.parquet")
        pd.testing.assert_frame_equal(got[list(want.columns)], want, check_exact=True)
