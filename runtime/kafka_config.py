"""Kafka client settings derived from `Settings`, shared by aiokafka clients and Faust."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError
from runtime.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

__all__ = ["bootstrap_servers", "client_kwargs", "faust_credentials", "ssl_context"]


def bootstrap_servers(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "no Kafka broker configured: set SHELFCAST_KAFKA_BOOTSTRAP=host:port "
            "(or run `shelfcast demo`, which starts an embedded one)"
        )
    return settings.kafka_bootstrap


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying TLS context (the configured CA bundle, else the system's) for the SSL and
    SASL_SSL protocols; None for the plaintext ones."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    if cafile is not None and not cafile.is_file():
        raise ConfigError(f"SHELFCAST_KAFKA_SSL_CAFILE={cafile}: no such file")
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"SHELFCAST_KAFKA_SSL_CAFILE={cafile}: not a PEM CA bundle ({exc})"
        ) from exc


def _sasl(settings: Settings) -> tuple[str, str, str] | None:
    """(mechanism, username, password) for the SASL protocols; None for the others."""
    if settings.kafka_security_protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        return None
    password = settings.kafka_sasl_password
    if not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username and password):
        raise ConfigError(
            f"SHELFCAST_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "SHELFCAST_KAFKA_SASL_MECHANISM, SHELFCAST_KAFKA_SASL_USERNAME and "
            "SHELFCAST_KAFKA_SASL_PASSWORD"
        )
    return settings.kafka_sasl_mechanism, settings.kafka_sasl_username, password.get_secret_value()


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka producers, consumers and admin clients."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    sasl = _sasl(settings)
    if sasl is not None:
        mechanism, username, password = sasl
        kwargs["sasl_mechanism"] = mechanism
        kwargs["sasl_plain_username"] = username
        kwargs["sasl_plain_password"] = password
    return kwargs


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same security settings as Faust's `broker_credentials` (None for PLAINTEXT)."""
    import faust  # imported on demand: only the Faust engine needs it

    context = ssl_context(settings)
    sasl = _sasl(settings)
    if sasl is not None:
        mechanism, username, password = sasl
        return faust.SASLCredentials(
            username=username, password=password, mechanism=mechanism, ssl_context=context
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
