"""Behaviour kept: a few representative runs reproduce their golden Parquet files, exactly on
counts and decisions and within the stated tolerances on floats (tests/golden_cases.py says how
each tolerance was chosen), on any CPU.

The one intended change since the files were first written: HetLoRA with independent sampling
aggregates with the unbiased weights p_i / q_i."""

import pytest

from tests.golden_cases import cases, differences, golden, run_case, tolerance

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name, tmp_path):
    got = run_case(CASES[name], tmp_path / "run")
    for frame, want in zip(got, golden(name), strict=True):
        for col, ratio in differences(frame[list(want.columns)], want).items():
            tol = tolerance(col)
            assert ratio <= 1.0, f"{col}: {ratio:.3g} of its tolerance (rtol {tol.rtol}, atol {tol.atol})"


def test_a_real_change_is_caught(tmp_path):
    """The tolerances are not so loose that a different run passes: one more local epoch moves
    the training columns far past them, and the clients' step counts differ exactly."""
    name = "fedavg-soft-tsfa-independent"
    rounds, clients = run_case([*CASES[name], "federation.local_epochs=2"], tmp_path / "run")
    want_rounds, want_clients = golden(name)
    assert differences(rounds[list(want_rounds.columns)], want_rounds)["train_loss"] > 100
    with pytest.raises(AssertionError, match="steps"):
        differences(clients[list(want_clients.columns)], want_clients)
