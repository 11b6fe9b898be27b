"""deploy/helm/conn: `helm lint` and `helm template` run, and the rendered manifests say what
an operator relies on (probes, resources, non-root, PDBs, secrets vs config, topic settings,
scaling guard, monitoring, network policy, RBAC)."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    CHART,
    CI_VALUES,
    MINIMAL,
    SERVICES,
    Manifests,
    container,
    env_of,
    exported_metrics,
    pod_env,
    promql_problems,
    render,
    run_helm,
    template,
)

PORTS = {"directive-api": 18000, "executor": 18101, "verifier": 18102, "packager": 18103}
SASL_PASSWORD = "s3cr3t-sasl-pw"
DB_PASSWORD = "s3cr3t-db-pw"


@pytest.fixture(scope="module")
def prod() -> Manifests:
    """The production-shaped example values (SASL_SSL, CA secret, monitoring on)."""
    return render(values_files=[CI_VALUES])


@pytest.fixture(scope="module")
def minimal() -> Manifests:
    return render()


# --- lint / template ------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["-f", str(CI_VALUES)]], ids=["minimal", "production"])
def test_helm_lint_strict_passes(extra: list[str]) -> None:
    args = ["lint", "--strict", str(CHART), *extra]
    if not extra:
        for k, v in MINIMAL.items():
            args += ["--set-string", f"{k}={v}"]
    res = run_helm(args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


def test_template_without_kafka_fails_with_a_clear_message() -> None:
    res = template({k: v for k, v in MINIMAL.items() if k != "kafka.bootstrapServers"})
    assert res.returncode != 0
    assert "kafka.bootstrapServers is required" in res.stderr


def test_template_without_database_fails_with_a_clear_message() -> None:
    res = template({k: v for k, v in MINIMAL.items() if k != "postgresql.url"})
    assert res.returncode != 0
    assert "postgresql.url is required" in res.stderr


# --- deployments ----------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_deployment_has_probes_resources_and_runs_non_root(
    minimal: Manifests, service: str
) -> None:
    dep = minimal.deployment(service)
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"ops": PORTS[service]}

    live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    assert ports[live["port"]] == PORTS[service]
    assert ports[ready["port"]] == PORTS[service]

    res = c["resources"]
    for kind in ("requests", "limits"):
        assert res[kind]["cpu"] and res[kind]["memory"], (service, kind, res)

    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert int(psc["runAsUser"]) != 0
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert c["image"] == f"registry.example.com/conn-{service}:0.1.0"


def test_exactly_the_four_services_are_deployed(minimal: Manifests) -> None:
    names = sorted(d["metadata"]["name"] for d in minimal.of_kind("Deployment"))
    assert names == sorted(f"conn-{s}" for s in SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_every_deployment_has_a_pdb_selecting_its_pods(minimal: Manifests, service: str) -> None:
    pdb = minimal.get("PodDisruptionBudget", f"conn-{service}")
    assert pdb["apiVersion"] == "policy/v1"
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    labels = minimal.deployment(service)["spec"]["template"]["metadata"]["labels"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert selector["app.kubernetes.io/component"] == service


def test_image_by_digest() -> None:
    digest = "sha256:" + "ab" * 32
    m = render({"image.digest": digest})
    assert container(m.deployment("executor"))["image"] == (
        f"registry.example.com/conn-executor@{digest}"
    )


_SETTINGS = {
    "directive-api": ("conn_api.config", "ApiSettings", "conn_api_host", "conn_api_port"),
    "executor": ("conn_executor.settings", "ExecutorSettings", "metrics_host", "metrics_port"),
    "verifier": ("conn_verifier.settings", "VerifierSettings", "metrics_host", "metrics_port"),
    "packager": (
        "conn_packager.settings",
        "PackagerSettings",
        "conn_packager_host",
        "conn_packager_metrics_port",
    ),
}


@pytest.mark.parametrize("service", SERVICES)
def test_service_settings_read_the_rendered_bind_address_and_port(
    minimal: Manifests, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env names in the chart are the ones the service's own settings model reads: it
    listens on all interfaces at exactly the port the probes hit."""
    module, cls, host_field, port_field = _SETTINGS[service]
    settings_cls = getattr(importlib.import_module(module), cls)
    c = container(minimal.deployment(service))
    for key, value in pod_env(minimal, c).items():
        monkeypatch.setenv(key, value)
    settings = settings_cls()
    assert getattr(settings, host_field) == "0.0.0.0"
    assert getattr(settings, port_field) == c["ports"][0]["containerPort"] == PORTS[service]


# --- config vs secrets ----------------------------------------------------------------------


def _non_secret_text(m: Manifests) -> str:
    return yaml.safe_dump_all([d for d in m.docs if d["kind"] != "Secret"])


def _sasl(password: str = SASL_PASSWORD) -> dict[str, str]:
    out = {
        "kafka.securityProtocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.topics.job.kafkaSasl.username": "conn-topics",
        "kafka.topics.job.kafkaSasl.password": f"{password}-topics",
    }
    for svc in SERVICES:
        out[f"services.{svc}.kafkaSasl.username"] = f"conn-{svc}"
        out[f"services.{svc}.kafkaSasl.password"] = f"{password}-{svc}"
    return out


def test_database_url_and_credentials_live_in_the_secrets_not_the_configmap() -> None:
    url = f"postgresql://conn:{DB_PASSWORD}@pg.internal:5432/conn"
    m = render({"postgresql.url": url, **_sasl()})
    for svc in SERVICES:
        secret = m.get("Secret", f"conn-{svc}")["stringData"]
        assert secret["KAFKA_SASL_USERNAME"] == f"conn-{svc}"
        assert secret["KAFKA_SASL_PASSWORD"] == f"{SASL_PASSWORD}-{svc}"
        if svc != "verifier":
            assert secret["DATABASE_URL"] == url
    cm = m.get("ConfigMap", "conn")["data"]
    assert "DATABASE_URL" not in cm
    assert "KAFKA_SASL_PASSWORD" not in cm
    text = _non_secret_text(m)
    assert DB_PASSWORD not in text
    assert SASL_PASSWORD not in text
    for service in SERVICES:
        env = env_of(container(m.deployment(service)))
        if service == "verifier":
            assert "DATABASE_URL" not in env  # it never touches the database
        else:
            assert env["DATABASE_URL"] == {
                "secretKeyRef": {"name": f"conn-{service}", "key": "DATABASE_URL"}
            }


# Credentials of the target systems, by the only services allowed to see each. The
# read-only metrics token goes to both readers of metrics: the verifier's samples and the
# executor's gathers (without it an authenticated Prometheus gives the gathers nothing).
TARGET_SECRETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "secrets.unleashToken": ("unleash-write-s3cret", ("executor",)),
    "secrets.kubernetesToken": ("kube-token-s3cret", ("executor",)),
    "secrets.recordWebhookHeaders": ("record-s3cret-header-json", ("executor",)),
    "secrets.prometheusToken": ("prom-read-s3cret", ("executor", "verifier")),
    "secrets.verifierUnleashToken": ("unleash-read-s3cret", ("verifier",)),
    "secrets.pagerdutyWebhookSecret": ("pd-webhook-s3cret", ("directive-api",)),
}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_receives_only_its_own_credentials(service: str) -> None:
    """Least privilege: a service's pod can resolve exactly the credentials it needs - the API
    never gets Kubernetes, Unleash or incident-record credentials, only the executor gets the
    target systems' write credentials, the verifier only read-only ones."""
    m = render(
        {
            **{k: v for k, (v, _) in TARGET_SECRETS.items()},
            "secrets.simulatorToken": "sim-s3cret",
            **_sasl(),
        }
    )
    dep = m.deployment(service)
    pod = dep["spec"]["template"]["spec"]
    env = pod_env(m, container(dep))
    secret_names = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container(dep)["env"]
        if "secretKeyRef" in (e.get("valueFrom") or {})
    } | {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    # Only its own Secret and its own signing key (by name), nobody else's.
    assert secret_names <= {f"conn-{service}-signing-vault", f"conn-{service}", "kafka-cluster-ca"}
    assert f"conn-{service}" in secret_names
    visible = set(env.values())
    for key, (value, owners) in TARGET_SECRETS.items():
        assert (value in visible) == (service in owners), (service, key)
    assert ("sim-s3cret" in visible) == (service in ("executor", "verifier"))
    # Its own Kafka principal, no other service's.
    assert env["KAFKA_SASL_USERNAME"] == f"conn-{service}"
    assert f"{SASL_PASSWORD}-topics" not in visible
    if service == "directive-api":
        for name in ("CONN_KUBERNETES_TOKEN", "CONN_UNLEASH_TOKEN", "CONN_RECORD_WEBHOOK_HEADERS"):
            assert name not in env


def test_the_verifier_gets_read_only_tokens_under_the_names_its_adapters_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from conn_adapters.config import AdapterSettings

    m = render({k: v for k, (v, _) in TARGET_SECRETS.items()})
    for key, value in pod_env(m, container(m.deployment("verifier"))).items():
        monkeypatch.setenv(key, value)
    assert AdapterSettings().unleash_token == "unleash-read-s3cret"
    assert AdapterSettings().prometheus_token == "prom-read-s3cret"


def test_the_executor_gets_the_metrics_token_its_gathers_read_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The executor's gathers (before every step, and gather_state) read the metrics
    backend: an authenticated Prometheus answers them only with its read-only token."""
    from conn_adapters.config import AdapterSettings

    m = render({k: v for k, (v, _) in TARGET_SECRETS.items()})
    env = pod_env(m, container(m.deployment("executor")))
    monkeypatch.setenv("CONN_PROMETHEUS_TOKEN", env["CONN_PROMETHEUS_TOKEN"])
    assert AdapterSettings().prometheus_token == "prom-read-s3cret"


def test_existing_secrets_replace_the_chart_secrets() -> None:
    values = {k: v for k, v in MINIMAL.items() if k != "postgresql.url"}
    for svc in SERVICES:
        values[f"services.{svc}.existingSecret"] = f"vault-{svc}"
    m = render(values)
    assert m.of_kind("Secret") == []  # signing keys come from existing secrets in MINIMAL
    for service in SERVICES:
        env = env_of(container(m.deployment(service)))
        assert env["KAFKA_SASL_PASSWORD"]["secretKeyRef"] == {
            "name": f"vault-{service}",
            "key": "KAFKA_SASL_PASSWORD",
            "optional": True,
        }
        if service != "verifier":
            assert env["DATABASE_URL"]["secretKeyRef"]["name"] == f"vault-{service}"
    vols = m.deployment("directive-api")["spec"]["template"]["spec"]["volumes"]
    tokens = next(v for v in vols if v["name"] == "api-tokens")
    assert tokens["secret"]["secretName"] == "vault-directive-api"


def test_the_shared_secret_values_of_older_charts_are_refused() -> None:
    for old in ("kafka.sasl.username", "secrets.existingSecret"):
        res = template({**MINIMAL, old: "conn"})
        assert res.returncode != 0
        assert "every service has its own Kafka principal" in res.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_sasl_needs_each_services_own_credentials(service: str) -> None:
    values = {**MINIMAL, **_sasl()}
    del values[f"services.{service}.kafkaSasl.password"]
    res = template(values)
    assert res.returncode != 0
    assert f"services.{service}.kafkaSasl.username and .password are required" in res.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_mounts_its_own_signing_key_and_the_shared_keyring(service: str) -> None:
    res = template(
        {
            **{k: v for k, v in MINIMAL.items() if ".signing.existingSecret" not in k},
            **{f"services.{svc}.signing.privateKey": f"PEM-OF-{svc}" for svc in SERVICES},
        }
    )
    assert res.returncode == 0, res.stderr
    m = Manifests(res.stdout)
    signing = m.get("Secret", f"conn-{service}-signing")["stringData"]
    assert signing == {"signing.key": f"PEM-OF-{service}"}
    dep = m.deployment(service)
    c = container(dep)
    env = pod_env(m, c)
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {mt["name"]: mt["mountPath"] for mt in c["volumeMounts"]}
    assert vols["signing-key"]["secret"]["secretName"] == f"conn-{service}-signing"
    assert env["CONN_SIGNING_KEY_FILE"] == f"{mounts['signing-key']}/signing.key"
    assert env["CONN_SIGNING_KEY_ID"] == f"{service}-1"
    assert vols["keyring"]["configMap"]["name"] == "conn-keyring"
    assert env["CONN_KEYRING_FILE"] == f"{mounts['keyring']}/keyring.yaml"
    assert m.get("ConfigMap", "conn-keyring")["data"]["keyring.yaml"] == "keys: []"
    # No other service's private key reaches this pod.
    text = yaml.safe_dump(dep)
    assert all(f"conn-{o}-signing" not in text for o in SERVICES if o != service)


def test_env_var_names_follow_values() -> None:
    m = render(
        {"envNames.signingKeyId": "CONN_EVENT_KEY_ID", "envNames.kafkaSaslUsername": "X_USER"}
    )
    env = env_of(container(m.deployment("packager")))
    assert "CONN_EVENT_KEY_ID" in env and "CONN_SIGNING_KEY_ID" not in env
    assert env["X_USER"]["secretKeyRef"]["key"] == "KAFKA_SASL_USERNAME"


def test_signing_without_keys_fails_render() -> None:
    res = template(
        {k: v for k, v in MINIMAL.items() if not k.startswith("services.executor.signing")}
    )
    assert res.returncode != 0
    assert "services.executor.signing.privateKey and .keyId are required" in res.stderr
    res = template({k: v for k, v in MINIMAL.items() if k != "signing.keyring"})
    assert res.returncode != 0
    assert "signing.keyring is required" in res.stderr


def test_example_api_tokens_file_is_valid_for_the_directive_api(prod: Manifests) -> None:
    from conn_api.auth import TokensFile

    dep = prod.deployment("directive-api")
    env = env_of(container(dep))
    key = env["CONN_API_TOKENS_FILE"].rsplit("/", 1)[1]
    parsed = TokensFile.model_validate(
        yaml.safe_load(prod.get("Secret", "conn-directive-api")["stringData"][key])
    )
    assert parsed.tokens and not parsed.development_only


def test_production_api_without_credentials_fails_render() -> None:
    res = template({k: v for k, v in MINIMAL.items() if k != "secrets.apiTokens"})
    assert res.returncode != 0
    assert "the directive-api needs credentials" in res.stderr


# --- Kafka: external cluster, SASL/TLS ------------------------------------------------------


def test_external_kafka_sasl_tls_values_render_into_env(
    prod: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = yaml.safe_load(CI_VALUES.read_text())
    cm = prod.get("ConfigMap", "conn")["data"]
    assert cm["KAFKA_BOOTSTRAP_SERVERS"] == values["kafka"]["bootstrapServers"]
    assert cm["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cm["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for svc in SERVICES:
        secret = prod.get("Secret", f"conn-{svc}")["stringData"]
        assert secret["KAFKA_SASL_USERNAME"] == values["services"][svc]["kafkaSasl"]["username"]

    for service in SERVICES:
        dep = prod.deployment(service)
        c = container(dep)
        env = env_of(c)
        assert env["KAFKA_SASL_USERNAME"]["secretKeyRef"]["key"] == "KAFKA_SASL_USERNAME"
        assert env["KAFKA_SASL_PASSWORD"]["secretKeyRef"]["key"] == "KAFKA_SASL_PASSWORD"
        # The CA file the env names is the one the CA Secret is mounted at.
        mount = next(m for m in c["volumeMounts"] if m["name"] == "kafka-ca")
        vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-ca")
        assert vol["secret"]["secretName"] == "kafka-cluster-ca"
        assert (
            env["KAFKA_SSL_CAFILE"] == f"{mount['mountPath']}/{vol['secret']['items'][0]['path']}"
        )

    # The shared KafkaSettings read the rendered environment as intended.
    from conn_runtime.settings import KafkaSettings

    for key, value in pod_env(prod, container(prod.deployment("executor"))).items():
        monkeypatch.setenv(key, value)
    ks = KafkaSettings()
    assert ks.kafka_security_protocol == "SASL_SSL"
    assert ks.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert ks.kafka_sasl_username == "conn-executor"
    assert ks.kafka_sasl_password == values["services"]["executor"]["kafkaSasl"]["password"]
    assert ks.kafka_ssl_cafile == "/etc/conn/kafka-ca/ca.crt"


def test_sasl_without_mechanism_fails_render() -> None:
    res = template({**MINIMAL, "kafka.securityProtocol": "SASL_SSL"})
    assert res.returncode != 0
    assert "kafka.sasl.mechanism is required" in res.stderr


def test_unknown_security_protocol_fails_render() -> None:
    res = template({**MINIMAL, "kafka.securityProtocol": "TLS"})
    assert res.returncode != 0
    assert "kafka.securityProtocol must be one of" in res.stderr


# --- topics job -----------------------------------------------------------------------------


def _job_specs(m: Manifests) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the rendered Job's own command with --dry-run and the Job's (plain) env."""
    job = m.get("Job", "conn-topics")
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["python", "-m", "conn_runtime.topics"]
    env = {k: v for k, v in env_of(c).items() if isinstance(v, str)}
    env.pop("KAFKA_SSL_CAFILE", None)
    proc = subprocess.run(
        [sys.executable, *c["command"][1:], *c["args"], "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    return job, doc["topics"] if isinstance(doc, dict) else doc


def _job_acls(m: Manifests) -> list[str]:
    job = m.get("Job", "conn-topics")
    c = job["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in env_of(c).items() if isinstance(v, str)}
    env.pop("KAFKA_SSL_CAFILE", None)
    proc = subprocess.run(
        [sys.executable, *c["command"][1:], *c["args"], "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict), "the topics Job does not create ACLs"
    acls: list[str] = doc["acls"]
    return acls


def test_topics_job_grants_each_service_its_own_principal(prod: Manifests) -> None:
    """The broker's ACLs name the Kafka user each service really logs in with (values
    services.<name>.kafkaSasl.username), not the code's defaults: otherwise every service
    would be refused by the broker, or a default-named stranger let in."""
    acls = _job_acls(prod)
    assert "User:conn-api WRITE topic conn.control" in acls
    assert "User:conn-executor READ group conn-executor" in acls
    assert "User:conn-packager WRITE topic conn.takeover" in acls
    assert "User:conn-verifier WRITE topic conn.events" in acls
    principals = {a.split()[0] for a in acls}
    assert principals == {
        "User:conn-api",
        "User:conn-executor",
        "User:conn-verifier",
        "User:conn-packager",
    }
    # Nobody but the API may write the kill switch.
    writers = {a.split()[0] for a in acls if a.endswith("WRITE topic conn.control")}
    assert writers == {"User:conn-api"}


def test_topics_job_acls_list_integrations_and_readers() -> None:
    m = render(
        {
            "kafka.topics.acls.integrations": "{status-page}",
            "kafka.topics.acls.readers": "{sre}",
        }
    )
    acls = _job_acls(m)
    assert "User:status-page WRITE topic conn.events" in acls
    assert not any(a.startswith("User:status-page WRITE topic conn.control") for a in acls)
    assert "User:sre READ topic conn.events" in acls
    assert not any(a.startswith("User:sre WRITE") for a in acls)


def test_the_example_keyring_loads_with_the_services_loader() -> None:
    """The keyring the example values ship is in the format every service loads."""
    from conn_schemas.signing import Keyring, SignerRole

    values = yaml.safe_load(CI_VALUES.read_text())
    keyring = Keyring.from_mapping(yaml.safe_load(values["signing"]["keyring"]))
    roles = {p["role"] for p in keyring.to_mapping()["principals"].values()}
    assert roles == {
        r.value
        for r in (SignerRole.API, SignerRole.EXECUTOR, SignerRole.VERIFIER, SignerRole.PACKAGER)
    }


def test_topics_job_creates_topics_with_production_settings(prod: Manifests) -> None:
    job, specs = _job_specs(prod)
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    by_name = {s["name"]: s for s in specs}
    assert set(by_name) == {"conn.events", "conn.takeover", "conn.control", "conn.deadletter"}
    for s in specs:
        assert s["replication_factor"] == 3, s
        assert s["configs"]["min.insync.replicas"] == "2", s
    ev = by_name["conn.events"]
    assert ev["partitions"] == 12  # kafka.topics.eventsPartitions in the example values
    assert ev["configs"]["retention.ms"] == "-1"
    assert ev["configs"]["cleanup.policy"] == "delete"
    assert by_name["conn.takeover"]["configs"]["cleanup.policy"] == "compact"
    assert by_name["conn.control"]["partitions"] == 1
    # Same image/security posture as the services; SASL credentials from the hook Secret.
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = env_of(pod["containers"][0])
    assert env["KAFKA_SASL_PASSWORD"]["secretKeyRef"]["name"] == "conn-topics"
    hook_secret = prod.get("Secret", "conn-topics")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert env["KAFKA_SSL_CAFILE"] == "/etc/conn/kafka-ca/ca.crt"


def test_topics_job_uses_the_topic_prefix_and_partitions_from_values() -> None:
    m = render({"kafka.topicPrefix": "prod.", "kafka.topics.eventsPartitions": 24})
    _, specs = _job_specs(m)
    events = next(s for s in specs if s["name"] == "prod.conn.events")
    assert events["partitions"] == 24


def test_topics_job_can_be_turned_off() -> None:
    m = render({"kafka.topics.create": False})
    assert m.of_kind("Job") == []


# --- scaling guard --------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["executor", "verifier", "packager"])
def test_replicas_above_events_partitions_fail_render(service: str) -> None:
    res = template(
        {**MINIMAL, "kafka.topics.eventsPartitions": 4, f"services.{service}.replicas": 5}
    )
    assert res.returncode != 0
    assert f"services.{service}.replicas=5 exceeds kafka.topics.eventsPartitions=4" in res.stderr


def test_replicas_equal_to_partitions_render() -> None:
    m = render(
        {
            "kafka.topics.eventsPartitions": 4,
            "services.executor.replicas": 4,
            "services.verifier.replicas": 4,
        }
    )
    assert m.deployment("executor")["spec"]["replicas"] == 4
    assert m.deployment("verifier")["spec"]["replicas"] == 4


def test_api_replicas_are_not_bound_by_partitions() -> None:
    m = render(
        {
            "kafka.topics.eventsPartitions": 1,
            "services.directive-api.replicas": 3,
            "services.executor.replicas": 1,
            "services.verifier.replicas": 1,
        }
    )
    assert m.deployment("directive-api")["spec"]["replicas"] == 3


# --- monitoring -----------------------------------------------------------------------------


def test_service_monitor_only_when_enabled(minimal: Manifests, prod: Manifests) -> None:
    assert minimal.of_kind("ServiceMonitor") == []
    (sm,) = prod.of_kind("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["port"] == "ops"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    # It selects every service's Service, and each names its port "ops".
    sel = sm["spec"]["selector"]["matchLabels"]
    services = [
        s for s in prod.of_kind("Service") if sel.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["name"] for s in services) == sorted(f"conn-{x}" for x in SERVICES)
    assert all(s["spec"]["ports"][0]["name"] == "ops" for s in services)


# --- network policy -------------------------------------------------------------------------


def test_network_policy_limits_api_ingress_and_egress(prod: Manifests) -> None:
    api = prod.get("NetworkPolicy", "conn-directive-api")
    assert api["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "directive-api"
    )
    (rule,) = api["spec"]["ingress"]
    froms = [
        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in rule["from"]
    ]
    assert froms == ["incident-bridge"]
    assert rule["ports"] == [{"port": "ops", "protocol": "TCP"}]

    base = prod.get("NetworkPolicy", "conn")
    assert set(base["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    egress = base["spec"]["egress"]
    ports = [{p["port"] for p in r["ports"]} for r in egress]
    assert {53} in ports  # DNS
    kafka = next(r for r in egress if {p["port"] for p in r["ports"]} == {9093})
    assert kafka["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    pg = next(r for r in egress if {p["port"] for p in r["ports"]} == {5432})
    assert pg["to"] == [{"ipBlock": {"cidr": "10.30.0.0/24"}}]


def test_network_policy_without_api_namespaces_admits_nobody_to_the_api(
    minimal: Manifests,
) -> None:
    api = minimal.get("NetworkPolicy", "conn-directive-api")
    assert api["spec"]["policyTypes"] == ["Ingress"]
    assert not api["spec"].get("ingress")


# --- RBAC -----------------------------------------------------------------------------------


def test_rbac_is_exactly_what_the_adapters_use_in_the_target_namespaces(prod: Manifests) -> None:
    roles = {(r["metadata"]["name"], r["metadata"]["namespace"]): r for r in prod.of_kind("Role")}
    assert sorted(roles) == [
        ("conn-executor", "checkout-eu-west"),
        ("conn-executor", "checkout-us-east"),
        ("conn-verifier", "checkout-eu-west"),
        ("conn-verifier", "checkout-us-east"),
    ]
    for (name, _ns), role in roles.items():
        rules = {
            (tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]
        }
        if name == "conn-executor":
            assert rules == {
                (("apps",), ("deployments",)): {"get", "patch"},
                (("apps",), ("deployments/scale",)): {"get", "patch"},
            }
        else:  # the verifier only reads rollout status
            assert rules == {(("apps",), ("deployments",)): {"get"}}
    for binding in prod.of_kind("RoleBinding"):
        who = binding["metadata"]["name"]  # conn-executor / conn-verifier
        assert binding["roleRef"]["name"] == who
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": who, "namespace": "incident"}
        ]
    for service in ("executor", "verifier"):
        spec = prod.deployment(service)["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == f"conn-{service}"
        assert spec["automountServiceAccountToken"] is True
        assert (
            prod.get("ServiceAccount", f"conn-{service}")["automountServiceAccountToken"] is False
        )
    for service in ("directive-api", "packager"):
        spec = prod.deployment(service)["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in spec


def test_kubernetes_orchestrator_without_namespaces_fails_render() -> None:
    values = {k: v for k, v in MINIMAL.items() if not k.startswith("adapters.kubernetes")}
    res = template(values)
    assert res.returncode != 0
    assert "needs adapters.kubernetes.namespaces" in res.stderr


def test_simulator_backends_render_no_rbac() -> None:
    values = {k: v for k, v in MINIMAL.items() if not k.startswith("adapters.kubernetes")}
    m = render(
        {
            **values,
            "adapters.orchestratorBackend": "simulator",
            "adapters.flagsBackend": "simulator",
        }
    )
    assert m.of_kind("Role") == []
    for service in SERVICES:
        spec = m.deployment(service)["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
    assert m.get("ConfigMap", "conn")["data"]["CONN_FLAGS_BACKEND"] == "simulator"


def test_adapter_settings_read_the_rendered_environment(
    prod: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conn_adapters.config import AdapterSettings

    for key, value in pod_env(prod, container(prod.deployment("executor"))).items():
        monkeypatch.setenv(key, value)
    s = AdapterSettings()
    assert s.flags_backend == "unleash"
    assert s.orchestrator_backend == "kubernetes"
    assert s.metrics_backend == "prometheus"
    assert s.record_backend == "webhook"
    assert s.kubernetes_namespaces == {"us-east": "checkout-us-east", "eu-west": "checkout-eu-west"}
    assert s.kubernetes_deployments["pricing-cache"] == "pricing-cache"
    assert s.unleash_environments == {"us-east": "production", "eu-west": "production-eu"}
    assert s.unleash_token == "unleash-admin-token"
    assert s.record_webhook_url == "https://hooks.example.internal/incident-notes"


# --- alerting -------------------------------------------------------------------------------


def test_prometheus_rule_only_when_enabled_and_its_rules_are_valid(
    minimal: Manifests, tmp_path: Path
) -> None:
    assert minimal.of_kind("PrometheusRule") == []
    m = render(
        {"prometheusRule.enabled": True, "prometheusRule.thresholds.consumerLagRecords": 250}
    )
    (rule,) = m.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r for r in rules}
    for alert in (
        "ConnSideEffectAfterStop",
        "ConnContainmentSlow",
        "ConnConsumerLagHigh",
        "ConnDeadLetters",
        "ConnVerifierStaleMetrics",
        "ConnApi5xx",
        "ConnFleetUnauthorizedSideEffect",
    ):
        assert alert in by_name, alert
    assert by_name["ConnConsumerLagHigh"]["expr"].rstrip().endswith("> 250")
    assert by_name["ConnSideEffectAfterStop"]["labels"]["severity"] == "critical"
    exported = exported_metrics()
    problems = [
        f"{r['alert']}: {p}"
        for r in rules
        if "conn_" in r["expr"]
        for p in promql_problems(r["expr"], exported)
    ]
    assert problems == []
    # The rules are valid Prometheus rules (promtool ships with setup's prometheus package).
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (deploy/local/setup.d/30-prometheus.sh installs it)")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    res = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
