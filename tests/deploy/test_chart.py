"""The Helm chart (helm/txlake), rendered with ``helm template`` and checked as parsed YAML.

No cluster or service is needed, only the helm binary that ``scripts/deploy-check.sh`` builds into
``.infra/tools/helm`` and PyYAML (which that script's kubernetes-validate install brings into
``.venv``). A missing tool is a failure, not a skip.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.core.environment import secret_settings, setting_variables, variable_name
from app.core.settings import Settings
from app.ops.configdoc import settings_docs
from tools.chart_settings import CHART_SETTINGS
from tools.chart_settings import render as render_chart_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM = REPO_ROOT / ".infra" / "tools" / "helm"
CHART = REPO_ROOT / "helm" / "txlake"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
RELEASE = "lake"
NAMESPACE = "data"
FULLNAME = "lake-txlake"
SECRETS_DIR = "/run/secrets/txlake"
# Every setting the code marks secret (SecretStr): the chart must never carry one as an environment variable.
SECRET_SETTINGS = {variable_name(path) for path in secret_settings(Settings)}

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the fixture below
    yaml = None


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(REPO_ROOT)} is missing: run `bash scripts/deploy-check.sh` first (it builds helm)")
    if yaml is None:
        pytest.fail("PyYAML is missing from .venv: run `bash scripts/deploy-check.sh` first (kubernetes-validate brings it)")


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(*args: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Renders the chart; returns the resources by (kind, name)."""
    result = helm_template(*args)
    assert result.returncode == 0, result.stderr
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in yaml.safe_load_all(result.stdout):
        if not doc:
            continue
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in resources, f"rendered twice: {key}"
        resources[key] = doc
    return resources


def render_fails(*args: str) -> str:
    result = helm_template(*args)
    assert result.returncode != 0, f"rendering should have failed:\n{result.stdout[:2000]}"
    return result.stderr


@pytest.fixture(scope="module")
def default() -> dict[tuple[str, str], dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def full() -> dict[tuple[str, str], dict[str, Any]]:
    return render("-f", str(FULL_VALUES))


def container(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (worker,) = resources[("Deployment", FULLNAME)]["spec"]["template"]["spec"]["containers"]
    return worker


def pod_spec(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return resources[("Deployment", FULLNAME)]["spec"]["template"]["spec"]


def env(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The container's env: a value, or the ``valueFrom`` source."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container(resources).get("env", [])}


# -- kinds ------------------------------------------------------------------------------------


def test_default_values_render_the_core_resources(default):
    kinds = {kind for kind, _ in default}
    assert {"Deployment", "ConfigMap", "Secret", "Service", "ServiceAccount", "PodDisruptionBudget", "Pod"} <= kinds
    # optional CRD-backed resources are off by default
    assert not kinds & {"ServiceMonitor", "PodMonitor", "ScaledObject"}


def test_full_values_render_everything(full):
    kinds = {kind for kind, _ in full}
    assert {"ServiceMonitor", "PodMonitor", "ScaledObject"} <= kinds
    for kind in ("ServiceMonitor", "PodMonitor"):
        assert full[(kind, FULLNAME)]["apiVersion"] == "monitoring.coreos.com/v1"
        assert full[(kind, FULLNAME)]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert full[("ScaledObject", FULLNAME)]["apiVersion"] == "keda.sh/v1alpha1"


def test_everything_lands_in_the_release_namespace(default):
    for (kind, name), resource in default.items():
        assert resource["metadata"]["namespace"] == NAMESPACE, (kind, name)


# -- probes -----------------------------------------------------------------------------------


def test_probes_use_livez_and_readyz_on_the_http_port(default):
    worker = container(default)
    assert worker["ports"] == [{"name": "http", "containerPort": 6066, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert worker["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    # the startup probe allows a slow first start; liveness only kicks in after it
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # readiness checks MySQL and the lake with 2 s timeouts each
    assert worker["readinessProbe"]["timeoutSeconds"] >= 5
    assert env(default)["TXLAKE_WEB__PORT"] == "6066"


def test_service_exposes_http_6066(default):
    service = default[("Service", FULLNAME)]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 6066, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == default[("Deployment", FULLNAME)]["spec"]["selector"]["matchLabels"]


# -- security ---------------------------------------------------------------------------------


def test_container_security_context(default):
    sc = container(default)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    pod_sc = pod_spec(default)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 10001 and pod_sc["fsGroup"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_service_account_token_is_not_mounted(default):
    assert pod_spec(default)["automountServiceAccountToken"] is False
    assert default[("ServiceAccount", FULLNAME)]["automountServiceAccountToken"] is False


def test_helm_test_pod_is_hardened_and_curls_readyz_and_metrics(default):
    pod = default[("Pod", f"{FULLNAME}-test")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (curl,) = pod["spec"]["containers"]
    image, _, tag = curl["image"].rpartition(":")
    assert image == "curlimages/curl" and tag and tag != "latest"
    script = " ".join(curl["args"])
    base = f"http://{FULLNAME}.{NAMESPACE}.svc:6066"
    assert f"{base}" in script and "/readyz" in script and "/metrics" in script
    sc = curl["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # the test pod is not a worker: the Service and the PDB must not select it
    selector = default[("Service", FULLNAME)]["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()


def test_termination_grace_period_lets_a_batch_land(default):
    assert pod_spec(default)["terminationGracePeriodSeconds"] >= 60
    stderr = render_fails("--set", "terminationGracePeriodSeconds=30")
    assert "terminationGracePeriodSeconds" in stderr


# -- secrets ----------------------------------------------------------------------------------


def test_secret_is_mounted_as_files_in_the_secrets_dir(default):
    mounts = {m["name"]: m for m in container(default)["volumeMounts"]}
    assert mounts["secrets"]["mountPath"] == SECRETS_DIR
    assert mounts["secrets"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(default)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == FULLNAME
    assert "items" not in volumes["secrets"]["secret"]  # every key becomes a file
    assert env(default)["TXLAKE_SECRETS_DIR"] == SECRETS_DIR
    # secrets never travel as environment variables
    names = set(env(default)) | set(default[("ConfigMap", FULLNAME)]["data"])
    assert not names & SECRET_SETTINGS


def test_chart_secret_keys_are_the_setting_file_names():
    resources = render(
        "--set", "secrets.mysqlPassword=pw",
        "--set", "secrets.anonymizationKey=key",
        "--set", "secrets.apiToken=tok",
        "--set", "secrets.ksqldbPassword=kpw",
    )  # fmt: skip
    secret = resources[("Secret", FULLNAME)]
    assert set(secret["data"]) == {"mysql__password", "anonymization__key", "web__api_token", "ksqldb__password"}
    assert "checksum/secret" in resources[("Deployment", FULLNAME)]["spec"]["template"]["metadata"]["annotations"]


def test_empty_secret_values_are_left_out(default):
    assert default[("Secret", FULLNAME)]["data"] in ({}, None)


def test_existing_secret_suppresses_the_chart_secret(full):
    assert not [name for kind, name in full if kind == "Secret"]
    volumes = {v["name"]: v for v in pod_spec(full)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "txlake-secrets"
    assert "checksum/secret" not in full[("Deployment", FULLNAME)]["spec"]["template"]["metadata"]["annotations"]


def test_chart_settings_file_is_generated_from_the_settings():
    """The chart's guards read settings.json: it must say what the settings say today."""
    assert CHART_SETTINGS.read_text(encoding="utf-8") == render_chart_settings(), (
        "helm/txlake/settings.json is out of date: run python -m tools.chart_settings"
    )


def test_the_issue_s_secrets_are_secret_settings():
    # The three the old hand-written list let into the ConfigMap.
    assert {"TXLAKE_WEB__API_TOKEN", "TXLAKE_KSQLDB__PASSWORD", "TXLAKE_KAFKA__SASL_PASSWORD"} <= SECRET_SETTINGS
    assert SECRET_SETTINGS <= set(setting_variables(Settings))
    # docs/configuration.md marks the same settings secret
    assert SECRET_SETTINGS == {doc.env_var for doc in settings_docs() if doc.secret}


@pytest.mark.parametrize("variable", sorted(SECRET_SETTINGS))
def test_every_secret_setting_is_refused_in_the_configmap(variable):
    """Derived from the settings' SecretStr fields: a new secret setting is covered, or this fails."""
    stderr = render_fails("--set", f"config.{variable}=oops")
    assert f"{variable} is a secret" in stderr
    file_name = variable.removeprefix("TXLAKE_").lower()
    assert f"file {file_name}" in stderr


def test_secret_names_are_refused_in_any_case():
    stderr = render_fails("--set", "config.txlake_web__api_token=oops")
    assert "txlake_web__api_token is a secret" in stderr


def values_file(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return str(path)


@pytest.mark.parametrize(
    "value",
    ['{"sasl_password": "oops"}', '{"SASL_PASSWORD": "oops", "group_id": "g"}', {"sasl_password": "oops"}],
)
def test_a_secret_inside_a_section_given_as_json_is_refused(value, tmp_path):
    stderr = render_fails("-f", values_file(tmp_path, {"TXLAKE_KAFKA": value}))
    assert "TXLAKE_KAFKA sets" in stderr and "a secret" in stderr and "kafka__sasl_password" in stderr


def test_a_section_given_as_json_without_secrets_renders(tmp_path):
    resources = render("-f", values_file(tmp_path, {"TXLAKE_KAFKA": '{"group_id": "g"}'}))
    assert resources[("ConfigMap", FULLNAME)]["data"]["TXLAKE_KAFKA"] == '{"group_id": "g"}'


def test_a_txlake_name_that_sets_nothing_is_refused():
    stderr = render_fails("--set", "config.TXLAKE_MYSQL_PORT=3306")
    assert "TXLAKE_MYSQL_PORT matches no txlake setting" in stderr
    # names outside txlake's prefix are the user's business (e.g. AWS_REGION for the S3 client)
    assert render("--set", "config.AWS_REGION=eu-west-1")[("ConfigMap", FULLNAME)]["data"]["AWS_REGION"] == "eu-west-1"


# -- replicas and configuration ---------------------------------------------------------------


def test_replicas_land_in_the_deployment():
    resources = render("--set", "replicaCount=4", "--set", "kafka.partitions=8")
    assert resources[("Deployment", FULLNAME)]["spec"]["replicas"] == 4


def test_config_lands_in_the_configmap_loaded_with_envfrom(full):
    data = full[("ConfigMap", FULLNAME)]["data"]
    assert data["TXLAKE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092"
    assert data["TXLAKE_KAFKA__GROUP_ID"] == "txlake-prod"
    assert data["TXLAKE_BATCHING__FLUSH_SIZE"] == "5000"
    assert json.loads(data["TXLAKE_BLACKLIST__COUNTRIES"]) == ["KP", "IR"]
    assert all(isinstance(value, str) for value in data.values())
    assert container(full)["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]


def test_non_string_config_values_become_strings():
    resources = render("--set", "config.TXLAKE_MYSQL__POOL_SIZE=8", "--set-json", 'config.TXLAKE_BLACKLIST__USERS=["u1"]')
    data = resources[("ConfigMap", FULLNAME)]["data"]
    assert data["TXLAKE_MYSQL__POOL_SIZE"] == "8"
    assert json.loads(data["TXLAKE_BLACKLIST__USERS"]) == ["u1"]


def test_config_change_rolls_the_pods(default):
    changed = render("--set", "config.TXLAKE_LOG_LEVEL=DEBUG")

    def checksum(resources):
        return resources[("Deployment", FULLNAME)]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum(changed) != checksum(default)


def test_each_pod_is_a_static_group_member_under_its_own_name(default):
    assert env(default)["TXLAKE_KAFKA__GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    dynamic = render("--set", "kafka.staticMembership=false")
    assert "TXLAKE_KAFKA__GROUP_INSTANCE_ID" not in env(dynamic)


def test_one_instance_id_for_every_pod_is_refused():
    stderr = render_fails("--set", "config.TXLAKE_KAFKA__GROUP_INSTANCE_ID=worker")
    assert "TXLAKE_KAFKA__GROUP_INSTANCE_ID would give every pod the same instance id" in stderr


def test_chart_sets_datadir_and_tmp_emptydir(default):
    assert env(default)["TXLAKE_DATADIR"] == "/tmp/txlake"  # noqa: S108 - the value the chart sets, not a file we open
    mounts = {m["name"]: m["mountPath"] for m in container(default)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(default)["volumes"]}
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]  # noqa: S108 - the mount path the chart sets


# -- the lake ---------------------------------------------------------------------------------


def test_default_lake_is_a_created_rwx_claim_kept_on_uninstall(default):
    pvc = default[("PersistentVolumeClaim", f"{FULLNAME}-lake")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in pod_spec(default)["volumes"]}
    assert volumes["lake"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-lake"
    assert env(default)["TXLAKE_LAKE__ROOT"] == "/data/lake"


def test_existing_claim_is_mounted_at_the_lake_root(full):
    assert not [name for kind, name in full if kind == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in pod_spec(full)["volumes"]}
    assert volumes["lake"]["persistentVolumeClaim"]["claimName"] == "txlake-lake-rwx"
    mounts = {m["name"]: m["mountPath"] for m in container(full)["volumeMounts"]}
    assert mounts["lake"] == env(full)["TXLAKE_LAKE__ROOT"] == "/data/lake"


def test_s3_lake_mounts_no_volume_and_passes_the_uri():
    resources = render("--set", "lake.s3.uri=s3://bucket/lake")
    assert not [name for kind, name in resources if kind == "PersistentVolumeClaim"]
    assert "lake" not in {v["name"] for v in pod_spec(resources)["volumes"]}
    variables = env(resources)
    assert variables["TXLAKE_LAKE__ROOT"] == "s3://bucket/lake"
    assert "TXLAKE_LAKE__S3_ENDPOINT_URL" not in variables and "TXLAKE_LAKE__S3_REGION" not in variables
    names = [e["name"] for e in container(resources)["env"]]
    assert len(names) == len(set(names))


def test_s3_lake_endpoint_and_region():
    resources = render(
        "--set", "lake.s3.uri=s3://bucket/lake",
        "--set", "lake.s3.endpointUrl=http://minio.minio:9000",
        "--set", "lake.s3.region=eu-west-1",
    )
    variables = env(resources)
    assert variables["TXLAKE_LAKE__ROOT"] == "s3://bucket/lake"
    assert variables["TXLAKE_LAKE__S3_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert variables["TXLAKE_LAKE__S3_REGION"] == "eu-west-1"


def test_a_lake_is_required():
    stderr = render_fails("--set", "lake.persistentVolumeClaim.create=false")
    assert "the lake needs a home" in stderr


# -- scaling: KEDA, PDB, anti-affinity --------------------------------------------------------


def test_keda_scaled_object(full):
    scaled = full[("ScaledObject", FULLNAME)]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert spec["maxReplicaCount"] == 12  # defaults to kafka.partitions
    assert spec["minReplicaCount"] == 4  # defaults to replicaCount
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["lagThreshold"] == "5000"
    assert trigger["metadata"]["consumerGroup"] == "txlake-prod"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    # KEDA owns the replica count
    assert "replicas" not in full[("Deployment", FULLNAME)]["spec"]


def test_keda_max_replicas_above_partitions_fails_rendering():
    stderr = render_fails(
        "-f", str(FULL_VALUES), "--set", "kafka.partitions=6", "--set", "keda.maxReplicaCount=8"
    )  # fmt: skip
    assert "keda.maxReplicaCount (8) > kafka.partitions (6)" in stderr


def test_keda_max_replicas_equal_to_partitions_renders():
    resources = render("-f", str(FULL_VALUES), "--set", "kafka.partitions=8", "--set", "keda.maxReplicaCount=8")
    assert resources[("ScaledObject", FULLNAME)]["spec"]["maxReplicaCount"] == 8


def test_pod_disruption_budget_allows_one_at_a_time(default):
    pdb = default[("PodDisruptionBudget", FULLNAME)]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == default[("Deployment", FULLNAME)]["spec"]["selector"]["matchLabels"]


def test_pod_anti_affinity_is_preferred_by_default(default):
    anti = pod_spec(default)["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_rollout_never_runs_more_consumers_than_replicas(default):
    assert default[("Deployment", FULLNAME)]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


# -- monitoring -------------------------------------------------------------------------------


def test_monitors_scrape_metrics_on_http(full):
    (endpoint,) = full[("ServiceMonitor", FULLNAME)]["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    (pod_endpoint,) = full[("PodMonitor", FULLNAME)]["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["port"] == "http" and pod_endpoint["path"] == "/metrics"


def test_grafana_dashboard_queries_the_txlake_metrics(full):
    cm = full[("ConfigMap", f"{FULLNAME}-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["txlake.json"])
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for metric in (
        "txlake_records_landed_total",
        "txlake_dead_letters_total",
        "txlake_sink_retries_total",
        "txlake_sink_flush_seconds_bucket",
        "txlake_consumer_lag_records",
    ):
        assert metric in exprs
    assert "histogram_quantile(0.99" in exprs


# -- roles: the stream side and the table side as two Deployments -----------------------------------

TABLES = f"{FULLNAME}-tables"


def deployment_args(resources: dict[tuple[str, str], dict[str, Any]], name: str) -> list[str]:
    (worker,) = resources[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return worker["args"]


def test_one_deployment_runs_every_role_by_default(default):
    assert deployment_args(default, FULLNAME) == ["worker", "--role", "all"]
    assert [name for kind, name in default if kind == "Deployment"] == [FULLNAME]


def test_split_roles_render_two_deployments_each_with_its_replicas_and_selector(full):
    assert deployment_args(full, FULLNAME) == ["worker", "--role", "streams"]
    assert deployment_args(full, TABLES) == ["worker", "--role", "tables"]
    streams, tables = full[("Deployment", FULLNAME)]["spec"], full[("Deployment", TABLES)]["spec"]
    assert streams["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert tables["selector"]["matchLabels"]["app.kubernetes.io/component"] == "tables"
    assert tables["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "tables"
    # Both keep the lake (snapshot versions are written by every worker), the secrets and the probes.
    for spec in (streams, tables):
        mounts = {m["name"] for m in spec["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert {"lake", "secrets", "tmp"} <= mounts
    # Each side has its own disruption budget and Service; the monitors scrape both.
    assert full[("PodDisruptionBudget", TABLES)]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "tables"
    assert full[("Service", TABLES)]["spec"]["selector"]["app.kubernetes.io/component"] == "tables"
    for kind in ("ServiceMonitor", "PodMonitor"):
        (expression,) = full[(kind, FULLNAME)]["spec"]["selector"]["matchExpressions"]
        assert expression == {"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker", "tables"]}


def test_split_roles_with_fixed_replicas():
    resources = render("--set", "roles=split", "--set", "replicaCount=3", "--set", "tables.replicaCount=2")
    assert resources[("Deployment", FULLNAME)]["spec"]["replicas"] == 3
    assert resources[("Deployment", TABLES)]["spec"]["replicas"] == 2


def test_each_side_scales_on_its_own_lag_capped_at_its_own_partitions(full):
    streams, tables = full[("ScaledObject", FULLNAME)]["spec"], full[("ScaledObject", TABLES)]["spec"]
    assert streams["scaleTargetRef"]["name"] == FULLNAME and streams["maxReplicaCount"] == 12
    assert tables["scaleTargetRef"]["name"] == TABLES and tables["maxReplicaCount"] == 6
    assert tables["minReplicaCount"] == 2
    groups = [t["metadata"]["consumerGroup"] for t in tables["triggers"]]
    assert groups == ["txlake-prod-tables", "txlake-prod-facts"]
    assert tables["triggers"][0]["metadata"]["topic"] == "txlake-table-deltas"
    assert "replicas" not in full[("Deployment", TABLES)]["spec"]


def test_tables_replicas_above_the_table_partitions_fail_rendering():
    error = render_fails("-f", str(FULL_VALUES), "--set", "tables.keda.maxReplicaCount=7")
    assert "tables.keda.maxReplicaCount (7) > tables.partitions (6)" in error


def test_an_unknown_role_layout_fails_rendering():
    assert "roles is \"tables\"" in render_fails("--set", "roles=tables")
