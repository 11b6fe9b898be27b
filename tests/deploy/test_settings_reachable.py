"""Every setting a service reads is documented and settable through the Helm chart.

The settings are found, not listed: every pydantic-settings class under runtime/,
services/ and adapters/ (an AST scan for subclasses of `BaseSettings`, so a new class is
covered the day it is written), each field's environment name (env_prefix + name), plus
the environment variables read directly (`os.environ.get("…")`) in the same code.

Each name must
- appear in deploy/OPERATIONS.md (its "Settings" section) as `NAME`, and
- be reachable from the chart: a key of values.yaml `settings` (rendered into the shared
  ConfigMap when not empty), or set from another value (`FROM_VALUES`: rendered with a
  sample value and found in the pods' environment), or set by the chart itself
  (`CHART_SETS`: found in the rendered environment), or be in `LEFT_OUT` with the reason.

And the other way round: every variable the chart puts into a pod's environment is read
by a service (a setting), or is in `NOT_A_SETTING` with what reads it.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import CHART, MINIMAL, ROOT, SERVICES, Manifests, container, pod_env, render
from pydantic_settings import BaseSettings

OPERATIONS = ROOT / "deploy" / "OPERATIONS.md"
SOURCES = [ROOT / "runtime", ROOT / "services", ROOT / "adapters"]

ALL = SERVICES
API = ("directive-api",)
ADAPTER_USERS = ("directive-api", "executor", "verifier")

# name -> (values path, sample, services whose environment must carry it)
FROM_VALUES: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka.bootstrapServers", "kafka-sample:9093", ALL),
    "CONN_TOPIC_PREFIX": ("kafka.topicPrefix", "sample.", ALL),
    "KAFKA_SECURITY_PROTOCOL": ("kafka.securityProtocol", "SASL_SSL", ALL),
    "KAFKA_SASL_MECHANISM": ("kafka.sasl.mechanism", "SCRAM-SHA-512", ALL),
    "KAFKA_SASL_USERNAME": ("services.{service}.kafkaSasl.username", "{service}-user", ALL),
    "KAFKA_SASL_PASSWORD": ("services.{service}.kafkaSasl.password", "{service}-pw", ALL),
    "CONN_SIGNING_KEY_ID": ("services.{service}.signing.keyId", "{service}-key-9", ALL),
    "CONN_ENV": ("api.env", "development", ALL),
    "DATABASE_URL": (
        "postgresql.url",
        "postgresql://sample:pw@pg:5432/conn",
        ("directive-api", "executor", "packager"),
    ),
    "CONN_PAGERDUTY_WEBHOOK_SECRET": ("secrets.pagerdutyWebhookSecret", "pd-sample", API),
    "CONN_ALERT_DEDUP_WINDOW_SECONDS": ("api.alertDedupWindowSeconds", 123, ALL),
    "CONN_API_JWKS_URL": ("api.jwks.url", "https://idp.sample/jwks", ALL),
    "CONN_API_JWT_ISSUER": ("api.jwks.issuer", "https://idp.sample", ALL),
    "CONN_API_JWT_AUDIENCE": ("api.jwks.audience", "conn-sample", ALL),
    "CONN_FLAGS_BACKEND": ("adapters.flagsBackend", "unleash", ALL),
    "CONN_ORCHESTRATOR_BACKEND": ("adapters.orchestratorBackend", "kubernetes", ALL),
    "CONN_METRICS_BACKEND": ("adapters.metricsBackend", "prometheus", ALL),
    "CONN_RECORD_BACKEND": ("adapters.recordBackend", "webhook", ALL),
    "CONN_ADAPTER_TIMEOUT": ("adapters.timeoutSeconds", 7, ALL),
    "CONN_SIMULATOR_URL": ("adapters.simulatorUrl", "http://sim.sample:18080", ALL),
    "CONN_SIMULATOR_TOKEN": ("secrets.simulatorToken", "sim-sample", ("executor", "verifier")),
    "CONN_UNLEASH_URL": ("adapters.unleash.url", "https://unleash.sample/api", ALL),
    "CONN_UNLEASH_TOKEN": ("secrets.unleashToken", "unleash-sample", ("executor",)),
    "CONN_UNLEASH_PROJECT": ("adapters.unleash.project", "sample-project", ALL),
    "CONN_UNLEASH_ENVIRONMENTS": ("adapters.unleash.environments.us-east", "prod-sample", ALL),
    "CONN_KUBERNETES_API_URL": ("adapters.kubernetes.apiUrl", "https://kube.sample", ALL),
    "CONN_KUBERNETES_TOKEN": ("secrets.kubernetesToken", "kube-sample", ("executor",)),
    "CONN_KUBERNETES_NAMESPACES": ("adapters.kubernetes.namespaces.eu-west", "ns-sample", ALL),
    "CONN_KUBERNETES_DEPLOYMENTS": ("adapters.kubernetes.deployments.pool-a", "dep-sample", ALL),
    "CONN_PROMETHEUS_URL": ("adapters.prometheus.url", "http://prom.sample:9090", ALL),
    "CONN_PROMETHEUS_TOKEN": (
        "secrets.prometheusToken",
        "prom-sample",
        ("executor", "verifier"),
    ),
    "CONN_PROMETHEUS_QUERIES": ("adapters.prometheus.queries.queue_depth", "q_sample", ALL),
    "CONN_PROMETHEUS_REGION_QUERIES": (
        "adapters.prometheus.regionQueries.eu-west.error_rate",
        "rq_sample",
        ALL,
    ),
    "CONN_RECORD_WEBHOOK_URL": ("adapters.record.webhookUrl", "https://hooks.sample/n", ALL),
    "CONN_RECORD_WEBHOOK_HEADERS": (
        "secrets.recordWebhookHeaders",
        "headers-sample",  # (JSON in real life; --set would read braces as a list)
        ("executor",),
    ),
    "CONN_RECORD_RETRIES": ("adapters.record.retries", 5, ALL),
    "CONN_PACKAGER_REPLICATION": ("kafka.topics.replicationFactor", 5, ALL),
    "CONN_EVENTS_PARTITIONS": ("kafka.topics.eventsPartitions", 24, ALL),
    "CONN_LOG_LEVEL": ("logLevel", "DEBUG", ALL),
    "CONN_API_PORT": ("services.directive-api.port", 18555, API),
    "CONN_EXECUTOR_METRICS_PORT": ("services.executor.port", 18556, ("executor",)),
    "CONN_VERIFIER_METRICS_PORT": ("services.verifier.port", 18557, ("verifier",)),
    "CONN_PACKAGER_METRICS_PORT": ("services.packager.port", 18558, ("packager",)),
}

# name -> (what the chart sets it to, given SAMPLE_VALUES; services)
CHART_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "CONN_API_HOST": ("0.0.0.0", API),  # the pod IP, not loopback
    "CONN_EXECUTOR_METRICS_HOST": ("0.0.0.0", ("executor",)),
    "CONN_VERIFIER_METRICS_HOST": ("0.0.0.0", ("verifier",)),
    "CONN_PACKAGER_HOST": ("0.0.0.0", ("packager",)),
    "CONN_API_TOKENS_FILE": ("/etc/conn/secrets/api-tokens.yaml", API),  # secrets.apiTokens
    "CONN_SIGNING_KEY_FILE": ("/etc/conn/signing/signing.key", ALL),  # its own key's Secret
    "CONN_KEYRING_FILE": ("/etc/conn/keyring/keyring.yaml", ALL),  # signing.keyring
    "KAFKA_SSL_CAFILE": ("/etc/conn/kafka-ca/ca.crt", ALL),  # kafka.tls.caSecret
    # The consumer groups the topics Job's ACLs grant: <kafka.topicPrefix>conn-<service>.
    "CONN_EXECUTOR_GROUP_ID": ("sample.conn-executor", ALL),
    "CONN_VERIFIER_GROUP_ID": ("sample.conn-verifier", ALL),
}

# name -> why the chart does not offer it
LEFT_OUT: dict[str, str] = {
    "CONN_EXECUTOR_ID": "unique per replica: the default is the pod's hostname and PID",
    "CONN_EXECUTOR_FAULT": "fault injection for the test suite only; never set in a deployment",
    "CONN_VERIFIER_SETTLE_OVERRIDE_SECONDS": "benchmarks only: it replaces the runbook's "
    "settle window",
    "CONN_API_TOKENS": "inline tokens (a one-off process); the chart mounts the tokens file "
    "from the directive-api's Secret (secrets.apiTokens) as CONN_API_TOKENS_FILE",
    "CONN_API_JWKS_FILE": "a file on disk; the chart takes the key set by URL (api.jwks.url)",
    "CONN_KUBERNETES_CA_FILE": "in-cluster the ServiceAccount's CA is used",
    "CONN_KUBERNETES_KUBECONFIG": "in-cluster configuration is used (a kubeconfig file is for "
    "running outside the cluster)",
    "CONN_KUBERNETES_INSECURE": "turns TLS verification of the Kubernetes API off: never in a "
    "deployment",
}

# variables the chart renders that are not settings of a service
NOT_A_SETTING = {
    "CONN_SERVICE": "the image's entry point picks the service by it (Dockerfile)",
    "CONN_HEALTH_PORT": "the image's HEALTHCHECK (Dockerfile)",
    "POD_NAME": "the downward API's pod name, for log shippers (not read by Conn)",
}

SAMPLE_VALUES: dict[str, Any] = {
    "kafka.tls.caSecret.name": "kafka-ca-sample",
    "kafka.topics.job.kafkaSasl.username": "topics-job",
    "kafka.topics.job.kafkaSasl.password": "topics-job-pw",
}


def _module_of(path: Path) -> str:
    parts = path.with_suffix("").parts
    start = next(i for i, p in enumerate(parts) if p.startswith("conn_"))
    return ".".join(parts[start:])


@cache
def settings_classes() -> tuple[type[BaseSettings], ...]:
    found: list[type[BaseSettings]] = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.py")):
            if "conn_" not in str(path.relative_to(ROOT)):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id == "BaseSettings" for b in node.bases
                ):
                    cls = getattr(importlib.import_module(_module_of(path)), node.name)
                    assert issubclass(cls, BaseSettings), cls
                    found.append(cls)
    return tuple(found)


def env_names(cls: type[BaseSettings]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = []
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        names.append((alias if isinstance(alias, str) else prefix + name).upper())
    return names


ENV_READ = re.compile(r"""os\.(?:environ\.get|getenv|environ\[)\(?\s*["']([A-Z0-9_]+)["']""")


@cache
def direct_reads() -> frozenset[str]:
    names = set()
    for base in SOURCES:
        for path in base.rglob("*.py"):
            names.update(ENV_READ.findall(path.read_text()))
    return frozenset(names)


@cache
def all_settings() -> frozenset[str]:
    names = {n for cls in settings_classes() for n in env_names(cls)}
    return frozenset(names | direct_reads())


@cache
def values_settings() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return dict(values["settings"])


def test_the_scan_finds_every_settings_class_and_the_direct_reads() -> None:
    """The discovery itself can fail: the classes known today are all found."""
    names = {f"{c.__module__}.{c.__name__}" for c in settings_classes()}
    assert {
        "conn_runtime.settings.KafkaSettings",
        "conn_runtime.settings.DatabaseSettings",
        "conn_runtime.settings.OpsSettings",
        "conn_runtime.pipeline.ConsumerSettings",
        "conn_executor.settings.ExecutorSettings",
        "conn_verifier.settings.VerifierSettings",
        "conn_packager.settings.PackagerSettings",
        "conn_api.config.ApiSettings",
        "conn_api.console.config.ConsoleSettings",
        "conn_adapters.config.AdapterSettings",
    } <= names, names
    assert {"CONN_LOG_LEVEL", "CONN_HTTP_MAX_HEAD_BYTES", "CONN_EVENTS_PARTITIONS"} <= (
        direct_reads()
    )
    for must in ("CONN_EXECUTOR_ACT_WITHIN", "CONN_API_IDEMPOTENCY_ABANDONED_SECONDS"):
        assert must in all_settings()
    assert "CONN_CONSUMER_PIPELINED" in all_settings()


def test_every_setting_is_documented_in_operations() -> None:
    text = OPERATIONS.read_text()
    missing = sorted(n for n in all_settings() if f"`{n}`" not in text)
    assert missing == [], f"not in deploy/OPERATIONS.md: {missing}"


def test_every_setting_has_exactly_one_way_into_the_chart() -> None:
    ways = {
        "values settings": set(values_settings()),
        "FROM_VALUES": set(FROM_VALUES),
        "CHART_SETS": set(CHART_SETS),
        "LEFT_OUT": set(LEFT_OUT),
    }
    problems = []
    for name in sorted(all_settings()):
        how = [way for way, names in ways.items() if name in names]
        if len(how) != 1:
            problems.append(f"{name}: {how or 'no way into the chart'}")
    for way, names in ways.items():
        for name in sorted(names - all_settings()):
            problems.append(f"{name} ({way}) is not read by any service any more")
    assert problems == []


@pytest.fixture(scope="module")
def sampled() -> Manifests:
    """The chart rendered with a sample value for every `settings` key and FROM_VALUES."""
    values: dict[str, Any] = {**MINIMAL, **SAMPLE_VALUES}
    values.update({f"settings.{name}": f"sample-{name.lower()}" for name in values_settings()})
    for path, sample, services in FROM_VALUES.values():
        if "{service}" in path:
            for service in services:
                values[path.format(service=service)] = sample.format(service=service)
        else:
            values[path] = sample
    return render(values)


def _env(m: Manifests, service: str) -> dict[str, str]:
    return pod_env(m, container(m.deployment(service)))


def test_every_settings_key_reaches_every_service(sampled: Manifests) -> None:
    for service in SERVICES:
        env = _env(sampled, service)
        for name in values_settings():
            assert env.get(name) == f"sample-{name.lower()}", (service, name)


def test_an_empty_setting_is_left_to_the_service(minimal_render: Manifests) -> None:
    env = _env(minimal_render, "executor")
    assert not set(values_settings()) & set(env), "the chart's defaults must not pin values"


@pytest.fixture(scope="module")
def minimal_render() -> Manifests:
    return render()


@pytest.mark.parametrize("name", sorted(FROM_VALUES))
def test_each_setting_from_another_value_reaches_its_services(
    sampled: Manifests, name: str
) -> None:
    path, sample, services = FROM_VALUES[name]
    for service in services:
        expected = str(sample).format(service=service) if "{service}" in path else str(sample)
        value = _env(sampled, service).get(name)
        assert value is not None and expected in value, (service, name, value)


@pytest.mark.parametrize("name", sorted(CHART_SETS))
def test_each_setting_the_chart_sets_is_set(sampled: Manifests, name: str) -> None:
    expected, services = CHART_SETS[name]
    for service in services:
        assert _env(sampled, service).get(name) == expected, (service, name)


def test_the_group_ids_are_the_ones_the_topics_job_grants() -> None:
    from conn_runtime.acls import Groups

    groups = Groups(prefix="sample.")
    assert CHART_SETS["CONN_EXECUTOR_GROUP_ID"][0] == groups.name(groups.executor)
    assert CHART_SETS["CONN_VERIFIER_GROUP_ID"][0] == groups.name(groups.verifier)


def test_every_variable_the_chart_renders_is_read_by_a_service(sampled: Manifests) -> None:
    rendered: set[str] = set()
    for service in SERVICES:
        rendered |= set(_env(sampled, service))
    unread = sorted(rendered - all_settings() - set(NOT_A_SETTING))
    assert unread == [], f"the chart sets variables no service reads: {unread}"
