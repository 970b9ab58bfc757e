"""bench.latency's statistics without a server: percentiles, and quantiles estimated from a scraped
Prometheus histogram (the watcher's ``cdc_commit_to_delivered_seconds``)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench.latency import (
    HISTOGRAM,
    Summary,
    bucket_difference,
    histogram_buckets,
    histogram_quantile,
    percentile,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),  # between the two middle ranks
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0.9, 4.6),
        ([7.0], 0.99, 7.0),
        ([1.0, 2.0], 0.0, 1.0),
        ([1.0, 2.0], 1.0, 2.0),
    ],
)
def test_percentile_is_linear_between_ranks(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_and_summary_of_nothing() -> None:
    assert math.isnan(percentile([], 0.5))
    s = Summary.of([])
    assert s.n == 0 and math.isnan(s.p99) and math.isnan(s.max)


def exposition(observations: list[float]) -> str:
    registry = CollectorRegistry()
    h = Histogram(HISTOGRAM, "latency", buckets=(0.005, 0.01, 0.025, 0.05, 0.1), registry=registry)
    for value in observations:
        h.observe(value)
    return generate_latest(registry).decode()


def test_buckets_from_an_exposition() -> None:
    buckets = histogram_buckets(exposition([0.001, 0.007, 0.007, 0.2]))
    assert buckets == [(0.005, 1.0), (0.01, 3.0), (0.025, 3.0), (0.05, 3.0), (0.1, 3.0), (math.inf, 4.0)]
    assert histogram_buckets(exposition([]), "cdc_missing") == []


def test_the_difference_of_two_scrapes() -> None:
    before = histogram_buckets(exposition([0.001, 0.2]))
    after = histogram_buckets(exposition([0.001, 0.2, 0.007, 0.03]))
    assert bucket_difference(after, before) == [
        (0.005, 0.0),
        (0.01, 1.0),
        (0.025, 1.0),
        (0.05, 2.0),
        (0.1, 2.0),
        (math.inf, 2.0),
    ]


def test_quantiles_interpolate_within_a_bucket_like_prometheus() -> None:
    # 10 observations: 4 up to 5 ms, 4 in (5, 10] ms, 2 in (25, 50] ms
    buckets = [(0.005, 4.0), (0.01, 8.0), (0.025, 8.0), (0.05, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.0025)  # rank 2 of 4 in [0, 5 ms]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.00625)  # rank 5: 1 of 4 in (5, 10]
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.0375)  # rank 9: 1 of 2 in (25, 50]
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.05)


def test_quantile_in_the_infinite_bucket_is_the_highest_bound() -> None:
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1


def test_quantile_of_no_observations() -> None:
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))
