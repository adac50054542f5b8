"""How stream-reco's clients authenticate and encrypt (Kafka SASL/TLS, Redis URL, HTTP token)."""

from __future__ import annotations

import dataclasses
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

if TYPE_CHECKING:
    from stream_reco.config import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
MASK = "***"
_USERINFO = re.compile(r"//([^:/@]*):[^@]*@")


def problems(s: Settings, env: dict[str, str]) -> list[str]:
    """What is wrong with the security settings, each naming its variable."""
    out: list[str] = []
    protocol = s.kafka_security_protocol
    if protocol not in PROTOCOLS:
        out.append(f"{env['kafka_security_protocol']} must be one of {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL_"):
        if s.kafka_sasl_mechanism not in MECHANISMS:
            out.append(f"{env['kafka_sasl_mechanism']} must be one of {', '.join(MECHANISMS)}")
        if not s.kafka_sasl_username or not s.kafka_sasl_password:
            out.append(
                f"{env['kafka_sasl_username']} and {env['kafka_sasl_password']} are needed "
                f"with {env['kafka_security_protocol']}={protocol}"
            )
    if s.kafka_ssl_ca_file and not Path(s.kafka_ssl_ca_file).is_file():
        out.append(f"{env['kafka_ssl_ca_file']}: no such file {s.kafka_ssl_ca_file!r}")
    return out


def kafka_options(s: Settings) -> dict[str, Any]:
    """librdkafka's (confluent-kafka's) connection options: servers, protocol, credentials."""
    out: dict[str, Any] = {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        "security.protocol": s.kafka_security_protocol,
    }
    if s.kafka_security_protocol.startswith("SASL_"):
        out["sasl.mechanisms"] = s.kafka_sasl_mechanism
        out["sasl.username"] = s.kafka_sasl_username
        out["sasl.password"] = s.kafka_sasl_password
    if s.kafka_security_protocol.endswith("SSL") and s.kafka_ssl_ca_file:
        out["ssl.ca.location"] = s.kafka_ssl_ca_file
    return out


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """For the clients that take an SSLContext (Faust's aiokafka); None without TLS."""
    if not s.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=s.kafka_ssl_ca_file or None)


def masked_url(url: str) -> str:
    """A URL with its password (in the user part or a `password` parameter, however encoded)
    replaced, for anything a person may read; the rest as written. Never raises."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL: mask whatever sits where a password would
        return _USERINFO.sub(rf"//\1:{MASK}@", url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = f"{user.split(':', 1)[0]}:{MASK}"
    query = "&".join(_masked_param(p) for p in parts.query.split("&")) if parts.query else ""
    netloc = f"{user}{at}{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _masked_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    return f"{name}={MASK}" if eq and unquote_plus(name).lower() == "password" else param


def shown(settings: Settings) -> dict[str, object]:
    """Every setting as `repr` shows it: secrets (fields with repr=False) and the Redis
    password masked, so no log line, traceback or report can quote them."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "redis_url":
            value = masked_url(value)
        elif not f.repr:
            value = MASK if value else ""
        out[f.name] = value
    return out
