"""Kafka client settings: SASL/TLS from Settings for aiokafka and Faust alike, mistakes as
one-line ConfigErrors, the password only where a client needs it."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from runtime.errors import ConfigError
from runtime.kafka_config import client_kwargs, faust_credentials
from runtime.settings import Settings

SASL = dict(kafka_bootstrap="b:9093", kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="u",
            kafka_sasl_password="s3cret-pw")


def test_plaintext_has_no_tls_and_no_sasl():
    kwargs = client_kwargs(Settings(kafka_bootstrap="b:9092", kafka_sasl_username="ignored"))
    assert kwargs == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings(kafka_bootstrap="b:9092")) is None


def test_sasl_ssl_reaches_aiokafka_and_faust_with_a_verifying_context():
    settings = Settings(**SASL)
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cret-pw"
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert kwargs["ssl_context"].check_hostname
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert "s3cret-pw" not in repr(creds) and "s3cret-pw" not in repr(settings)


def test_ssl_only_gives_faust_ssl_credentials():
    creds = faust_credentials(Settings(kafka_bootstrap="b:9093", kafka_security_protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"kafka_sasl_password": None}, "needs SHELFCAST_KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_cafile": Path("/nonexistent/ca.pem")}, "no such file"),
    ],
)
def test_incomplete_security_settings_are_one_line_errors(update, message):
    with pytest.raises(ConfigError, match=message) as err:
        client_kwargs(Settings(**{**SASL, **update}))
    assert "\n" not in str(err.value)


def test_a_file_that_is_no_ca_bundle_is_a_config_error(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="not a PEM CA bundle"):
        client_kwargs(Settings(**{**SASL, "kafka_ssl_cafile": bogus}))
