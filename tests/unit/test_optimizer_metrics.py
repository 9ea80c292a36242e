"""The optimizer's /metrics: its counters, and the accuracy monitors' rolling scores as gauges."""

from datetime import UTC, datetime

from prometheus_client import generate_latest

from forecasting.accuracy import RollingScores
from optimizer.actuals import AccuracyRow
from optimizer.metrics import optimizer_registry
from optimizer.service import ServiceCounters


class _Service:
    def __init__(self) -> None:
        self.counters = ServiceCounters(demand_in=12, drift_alerts=1)
        nan = float("nan")
        self.accuracy = [
            AccuracyRow("*", "lstm-1+abc", 86_400, datetime(2011, 3, 1, tzinfo=UTC), True,
                        RollingScores(28, 560, 0.31, 0.62, -0.2, nan)),
            AccuracyRow("wh1", "lstm-1+abc", 86_400, None, False,
                        RollingScores(0, 0, nan, nan, nan, nan)),  # nothing scored yet
        ]


def test_accuracy_gauges_per_segment_and_model_version():
    text = generate_latest(optimizer_registry(_Service())).decode()
    assert "shelfcast_optimizer_demand_in_total 12.0" in text
    assert "shelfcast_optimizer_drift_alerts_total 1.0" in text
    labels = 'bucket_seconds="86400",model_version="lstm-1+abc",segment="*"'
    assert f"shelfcast_forecast_coverage{{{labels}}} 0.62" in text
    assert f"shelfcast_forecast_pinball_relative{{{labels}}} 0.31" in text
    assert f"shelfcast_forecast_bias_relative{{{labels}}} -0.2" in text
    assert f"shelfcast_forecast_drift_open{{{labels}}} 1.0" in text
    # a monitor with nothing scored exports its state, not NaN scores
    assert 'shelfcast_forecast_drift_open{bucket_seconds="86400",model_version="lstm-1+abc",' \
           'segment="wh1"} 0.0' in text
    assert 'shelfcast_forecast_coverage{bucket_seconds="86400",model_version="lstm-1+abc",' \
           'segment="wh1"}' not in text
