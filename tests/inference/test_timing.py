import time

import pytest

from livt.inference.timing import time_interleaved


def test_time_interleaved_rotates_the_order_and_keeps_the_ratio():
    order = []

    def sleeper(name: str, seconds: float):
        def fn():
            order.append(name)
            time.sleep(seconds)

        return fn

    rows = time_interleaved(
        {"slow": sleeper("slow", 0.004), "fast": sleeper("fast", 0.002)},
        batch_size=2,
        warmup=1,
        rounds=4,
        iters=2,
    )
    timed = order[2:]  # after one warm-up call each
    firsts = [timed[4 * r] for r in range(4)]
    assert firsts == ["slow", "fast", "slow", "fast"]  # each round starts with the next function
    assert rows["slow"]["speedup_vs_first"] == 1.0
    assert 1.4 < rows["fast"]["speedup_vs_first"] < 2.6
    assert rows["fast"]["throughput"] > rows["slow"]["throughput"]
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": lambda: None}, batch_size=1, rounds=0)
