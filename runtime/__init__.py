"""Plumbing every room may stand on: settings, Kafka client config and lifecycle, fault points,
operator-facing errors and logging. It imports no domain package and no CLI."""
