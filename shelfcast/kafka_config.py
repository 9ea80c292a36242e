"""Kafka client settings derived from `Settings`, shared by aiokafka clients and Faust."""

from __future__ import annotations

import ssl
from typing import Any

from shelfcast.errors import ConfigError
from shelfcast.settings import Settings

__all__ = ["bootstrap_servers", "client_kwargs"]


def bootstrap_servers(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "no Kafka broker configured: set SHELFCAST_KAFKA_BOOTSTRAP=host:port "
            "(or run `shelfcast demo`, which starts an embedded one)"
        )
    return settings.kafka_bootstrap


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context()
    if settings.kafka_sasl_mechanism:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        kwargs["sasl_plain_password"] = password.get_secret_value() if password else None
    return kwargs
