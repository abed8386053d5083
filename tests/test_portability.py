"""The golden runs and the many-clients-per-pass equivalence hold on other CPUs' kernels.

One machine stands in for many: each setting runs benchmarks/portability.py in a fresh
interpreter under ATEN_CPU_CAPABILITY = default (no SIMD), avx2 and the machine's best, with 1
and 2 torch threads, and every difference must stay within its tolerance. The figures of a full
run are in benchmarks/results/portability.md."""

import pytest

from benchmarks.portability import CAPABILITIES, THREADS, measure, worst_of

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("capability", CAPABILITIES)
def test_every_golden_and_equivalence_holds_under(capability: str, threads: int):
    result = measure(capability, threads)
    if capability != "best":
        assert result["capability"].lower() == capability.lower(), result["capability"]
    fraction, where = worst_of(result)
    seen = f"{capability} ({result['capability']}), {threads} threads"
    print(f"{seen}: {fraction:.3g} of a tolerance at {where}")
    assert fraction <= 1.0, where
