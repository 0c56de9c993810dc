"""benchmark_inference's autorange stops as soon as a group takes `min_time` or more.

Found by mutation testing (benchmarks/mutation.py): `<=` for `<` in the autorange loop kept
full marks; no test had a group that took exactly `min_time`.
"""
import numpy as np
import pytest

from tinytorch.compression.inference import benchmark_inference


class StepClock:
    "A clock that moves only when the model runs, by `duration` per call (exact binary fractions)."

    def __init__(self, duration):
        self.now, self.duration, self.calls = 0.0, duration, 0

    def __call__(self):
        return self.now

    def model(self, x):
        self.now += self.duration
        self.calls += 1


@pytest.mark.task("benchmark-inference")
@pytest.mark.parametrize("calls_needed", [1, 4])
def test_a_group_taking_exactly_min_time_is_long_enough(calls_needed):
    clock = StepClock(0.125)
    result = benchmark_inference(clock.model, np.zeros(2), warmup=0, repeats=3,
                                 min_time=0.125 * calls_needed, timer=clock)
    assert result["number"] == calls_needed
    assert result["median"] == 0.125
