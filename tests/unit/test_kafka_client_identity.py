"""Every Kafka client of a process logs in as the same principal, SASL and TLS alike.

Issue 12 item 5: the packager's faust connection must use the same credentials as the
aiokafka clients (`conn_runtime.kafka.client_options`), and TLS is configurable
(`KAFKA_SECURITY_PROTOCOL=SASL_SSL|SSL` + `KAFKA_SSL_CAFILE`). Checked here on what
faust actually hands to aiokafka (`credentials_to_aiokafka_auth`), for every protocol,
against a CA file of our own (the context must trust exactly it)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from conn_packager.app import broker_credentials
from conn_runtime.kafka import client_options
from conn_runtime.settings import KafkaSettings

CA_NAME = "conn-test-kafka-ca"


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("ca") / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _settings(protocol: str, ca: Path) -> KafkaSettings:
    sasl = protocol.startswith("SASL")
    return KafkaSettings(
        kafka_bootstrap_servers="broker:9093",
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism="SCRAM-SHA-512" if sasl else None,
        kafka_sasl_username="packager" if sasl else None,
        kafka_sasl_password="pw-of-packager" if sasl else None,
        kafka_ssl_cafile=str(ca) if protocol.endswith("SSL") else None,
    )


def _trusts_our_ca(context: Any) -> bool:
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    return {"commonName": CA_NAME} in subjects


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"])
def test_faust_and_aiokafka_clients_log_in_identically(protocol: str, ca_file: Path) -> None:
    settings = _settings(protocol, ca_file)
    plain = client_options(settings)
    faust = dict(credentials_to_aiokafka_auth(broker_credentials(settings)))
    assert plain["security_protocol"] == faust["security_protocol"] == protocol
    for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert plain.get(key) == faust.get(key), key
    if protocol.startswith("SASL"):
        assert faust["sasl_mechanism"] == "SCRAM-SHA-512"
        assert faust["sasl_plain_username"] == "packager"
        assert faust["sasl_plain_password"] == "pw-of-packager"
    if protocol.endswith("SSL"):
        assert _trusts_our_ca(plain["ssl_context"])
        assert _trusts_our_ca(faust["ssl_context"])
    else:
        assert plain.get("ssl_context") is None and faust.get("ssl_context") is None
