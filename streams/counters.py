"""Running totals of what a stream worker did, per batch (logged, and read by metrics)."""

from __future__ import annotations

from streams.processor import BatchOutputs

__all__ = ["StreamCounters"]


class StreamCounters:
    """Running totals of what the agent did (logged, and read by metrics later)."""

    def __init__(self) -> None:
        self.batches = self.events = self.accepted = self.duplicates = 0
        self.dlq = self.forecasts = self.restocks = self.alerts = 0

    def add(self, n_events: int, out: BatchOutputs) -> None:
        self.batches += 1
        self.events += n_events
        self.accepted += out.accepted
        self.duplicates += out.duplicates
        self.dlq += len(out.dead_letters)
        self.forecasts += out.forecast_count
        self.restocks += len(out.restocks)
        self.alerts += out.alert_count

    def summary(self) -> str:
        return (f"batches={self.batches} events={self.events} accepted={self.accepted} "
                f"dup={self.duplicates} dlq={self.dlq} forecasts={self.forecasts} "
                f"restocks={self.restocks} alerts={self.alerts}")
