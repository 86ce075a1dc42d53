"""Each check of checks.py on small inputs: a case it passes and the failures it must report.

Run from the repository root: python3 -m unittest discover -s script/lint_deploy
"""

import contextlib
import copy
import io
import json
import os
import tempfile
import textwrap
import unittest

import yaml

import checks

README = textwrap.dedent("""\
    # Configuration

    | Variable | Default | Values | Meaning |
    |---|---|---|---|
    | `SUBMISSIONS_QUEUE_URL` | (unset) | a queue URL | Queue URL. |
    | `EVENTS_DATA_STREAM_NAME` | `events` | a stream name | Stream. |
    | `SHUTDOWN_DRAIN_TIMEOUT_SEC` | `20` | seconds | Drain on SIGTERM. |

    ## Elsewhere

    | `NOT_A_SETTING` | `1` | x | Outside the table's section. |
    """)

SETTINGS = checks.Settings(
    {"SUBMISSIONS_QUEUE_URL": "", "EVENTS_DATA_STREAM_NAME": "events", "SHUTDOWN_DRAIN_TIMEOUT_SEC": "20"},
    "docs/configuration.md")


def quiet_report():
    """A report whose output is kept for inspection rather than printed."""
    return checks.Report(out=io.StringIO(), err=io.StringIO())


def write(root, path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)


class CheckTest(unittest.TestCase):
    def assertPasses(self, report):
        self.assertEqual(report.failures, [])

    def assertFails(self, report, *fragments):
        """Every fragment is in some failure message."""
        for fragment in fragments:
            self.assertTrue(any(fragment in f for f in report.failures),
                            f"no failure mentions {fragment!r}: {report.failures}")


# --- Fixtures: one valid object of each kind, copied and broken by the tests ---------------------

def deployment(name="telemetry-collector", configmap="telemetry-collector", annotations=None):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"template": {
            "metadata": {"labels": {"app.kubernetes.io/name": name}, "annotations": annotations or {}},
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 40,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "collector",
                    "envFrom": [{"configMapRef": {"name": configmap}}],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
                    "resources": {"limits": {"memory": "128Mi"}},
                    "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            },
        }},
    }


def scaled_object():
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "telemetry-collector"},
        "spec": {
            "scaleTargetRef": {"name": "telemetry-collector"},
            "minReplicaCount": 2, "maxReplicaCount": 20,
            "fallback": {"failureThreshold": 3, "replicas": 4},
            "advanced": {"scalingModifiers": {"formula": "breaker_open > 0 ? replicas * 500 : queue", "target": "500"}},
            "triggers": [
                {"type": "aws-sqs-queue", "name": "queue", "authenticationRef": {"name": "aws"},
                 "metadata": {"queueURLFromEnv": "SUBMISSIONS_QUEUE_URL", "awsRegion": "eu-west-1", "queueLength": "500"}},
                {"type": "prometheus", "name": "breaker_open",
                 "metadata": {"serverAddress": "http://prometheus:9090", "query": "max(telemetry_collector_breaker_open)"}},
            ],
        },
    }


def trigger_authentication():
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "TriggerAuthentication",
            "metadata": {"name": "aws"}, "spec": {"podIdentity": {"provider": "aws"}}}


def pod_disruption_budget():
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "telemetry-collector"},
            "spec": {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def pod_monitor(name="telemetry-collector", port="http"):
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "podMetricsEndpoints": [{"port": port, "path": "/metrics"}]}}


def container_definition(supervisor=False):
    command = ["telemetry-collector", "supervise"] if supervisor else ["telemetry-collector"]
    return {
        "name": "supervisor" if supervisor else "collector",
        "image": "telemetry-collector:0.1.0", "essential": True, "command": command, "user": "10001:10001",
        "healthCheck": {"command": ["CMD", "/usr/local/bin/telemetry-collector", "healthcheck"]},
        "stopTimeout": 10 if supervisor else 40,
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/telemetry-collector"}},
        "environment": [{"name": "AWS_REGION", "value": "eu-west-1"}, {"name": "RUST_LOG", "value": "info"},
                        {"name": "EVENTS_DATA_STREAM_NAME", "value": "events"}],
    }


def task_definition(supervisor=False):
    return {"family": "telemetry-shard-supervisor" if supervisor else "telemetry-collector",
            "taskRoleArn": "arn:aws:iam::1:role/" + ("supervisor" if supervisor else "collector"),
            "networkMode": "awsvpc", "containerDefinitions": [container_definition(supervisor)]}


def supervisor_service():
    return {"cluster": "telemetry", "serviceName": "telemetry-shard-supervisor",
            "taskDefinition": "telemetry-shard-supervisor", "desiredCount": 1, "schedulingStrategy": "REPLICA",
            "deploymentConfiguration": {"minimumHealthyPercent": 0, "maximumPercent": 100},
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}}


def ecs_docs():
    return {"deploy/ecs/task-definition.json": task_definition(),
            "deploy/ecs/supervisor-task-definition.json": task_definition(supervisor=True),
            "deploy/ecs/supervisor-service.json": supervisor_service()}


def compose():
    env = {"SUBMISSIONS_QUEUE_URL": None, "EVENTS_DATA_STREAM_NAME": "events", "SHUTDOWN_DRAIN_TIMEOUT_SEC": 20,
           "AWS_REGION": "eu-west-1", "RUST_LOG": "info"}
    return {"services": {
        "telemetry-collector": {"environment": env, "stop_grace_period": "30s",
                                "depends_on": {"localstack": {"condition": "service_healthy"}}},
        "localstack": {"image": "localstack/localstack:4.4.0", "healthcheck": {"test": ["CMD", "true"]}},
    }}


# --- The configuration table ---------------------------------------------------------------------

class ReadmeSettingsTest(CheckTest):
    def read(self, text):
        with tempfile.TemporaryDirectory() as root:
            write(root, "configuration.md", text)
            return checks.readme_settings(os.path.join(root, "configuration.md"))

    def test_reads_the_table_of_the_configuration_section(self):
        self.assertEqual(self.read(README), {"SUBMISSIONS_QUEUE_URL": "", "EVENTS_DATA_STREAM_NAME": "events",
                                             "SHUTDOWN_DRAIN_TIMEOUT_SEC": "20"})

    def test_a_file_without_the_heading_is_an_error(self):
        with self.assertRaisesRegex(checks.CheckError, "has no '# Configuration' heading"):
            self.read("# Something else\n")

    def test_a_table_without_variable_rows_is_an_error(self):
        with self.assertRaisesRegex(checks.CheckError, "no variable rows in its configuration table"):
            self.read("# Configuration\n\n| Variable | Default |\n")


class CheckNamesTest(CheckTest):
    def test_documented_aws_and_rust_log_names_pass(self):
        report = quiet_report()
        self.assertTrue(checks.check_names(report, SETTINGS, "here", ["EVENTS_DATA_STREAM_NAME", "AWS_REGION", "RUST_LOG"]))
        self.assertPasses(report)

    def test_an_unknown_name_fails(self):
        report = quiet_report()
        self.assertFalse(checks.check_names(report, SETTINGS, "here", ["EVENTS_STREAM"]))
        self.assertEqual(report.failures, [
            "here sets EVENTS_STREAM, which the collector does not read (not in the configuration table of "
            "docs/configuration.md, not AWS_*, not RUST_LOG)"])
        self.assertEqual(report.err.getvalue(), f"FAIL {report.failures[0]}\n")


# --- kustomize build -----------------------------------------------------------------------------

def build(configmap, *refs):
    docs = [{"kind": "ConfigMap", "metadata": {"name": configmap}}]
    for name, ref in refs:
        docs.append(deployment(name, ref))
    return docs


class KustomizeTest(CheckTest):
    def test_a_hashed_name_every_deployment_follows(self):
        verdict = checks.check_kustomize(
            build("telemetry-collector-aaa", ("b", "telemetry-collector-aaa"), ("a", "telemetry-collector-aaa")),
            build("telemetry-collector-bbb", ("b", "telemetry-collector-bbb"), ("a", "telemetry-collector-bbb")))
        self.assertEqual(verdict, "ConfigMap telemetry-collector-aaa, named by a, b; "
                                  "a changed setting renames it telemetry-collector-bbb")

    def test_a_name_without_hash_fails(self):
        with self.assertRaisesRegex(checks.CheckError, r"expected one generated ConfigMap telemetry-collector-<hash>, "
                                                       r"found \['settings'\]"):
            checks.check_kustomize(build("settings", ("a", "settings")), build("settings", ("a", "settings")))

    def test_a_deployment_naming_another_configmap_fails(self):
        with self.assertRaisesRegex(checks.CheckError, "Deployments do not all name telemetry-collector-aaa"):
            checks.check_kustomize(build("telemetry-collector-aaa", ("a", "telemetry-collector-aaa"), ("b", "other")),
                                   build("telemetry-collector-bbb", ("a", "telemetry-collector-bbb")))

    def test_a_name_that_does_not_change_with_the_content_fails(self):
        same = build("telemetry-collector-aaa", ("a", "telemetry-collector-aaa"))
        with self.assertRaisesRegex(checks.CheckError, "a changed setting keeps the name"):
            checks.check_kustomize(same, copy.deepcopy(same))


# --- JSON files ----------------------------------------------------------------------------------

class LoadJsonTest(CheckTest):
    def test_parses_every_file_and_fails_the_broken_one(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, "deploy/ecs/a.json", '{"a": 1}')
            write(root, "deploy/iam/deep/b.json", "[]")
            write(root, "deploy/iam/c.json", "{,}")
            report = quiet_report()
            docs = checks.load_json_files(report, root)
        self.assertEqual(docs, {"deploy/ecs/a.json": {"a": 1}, "deploy/iam/deep/b.json": []})
        self.assertEqual(len(report.failures), 1)
        self.assertFails(report, "deploy/iam/c.json: not JSON: Expecting property name")
        self.assertEqual(report.passed, ["deploy/**/*.json: 2 files parse"])


class IamTest(CheckTest):
    def trust(self, **statement):
        return {"Version": "2012-10-17", "Statement": [{"Sid": "S", "Effect": "Allow", **statement}]}

    def test_a_trust_policy_pinned_to_the_service_account_passes(self):
        report = quiet_report()
        checks.check_iam(report, {"deploy/iam/x-trust-irsa.json": self.trust(
            Principal={"Federated": "arn:oidc"}, Action="sts:AssumeRoleWithWebIdentity",
            Condition={"StringEquals": {"oidc:sub": "system:serviceaccount:telemetry:telemetry-collector"}})})
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/iam/x-trust-irsa.json: trust policy, every statement a principal with sts: actions"])

    def test_a_trust_policy_granting_actions_fails(self):
        report = quiet_report()
        checks.check_iam(report, {"deploy/iam/x-trust-a.json": self.trust(
            Principal={"AWS": "arn:role"}, Action=["sts:AssumeRole", "sqs:ReceiveMessage"], Resource="*")})
        self.assertEqual(report.failures, ["deploy/iam/x-trust-a.json: statement S is not a trust statement "
                                           "(Principal, sts: actions, no Resource)"])

    def test_an_oidc_trust_without_sub_fails(self):
        report = quiet_report()
        checks.check_iam(report, {"deploy/iam/x-trust-irsa.json": self.trust(
            Principal={"Federated": "arn:oidc"}, Action="sts:AssumeRoleWithWebIdentity",
            Condition={"StringEquals": {"oidc:aud": "sts.amazonaws.com"}})})
        self.assertEqual(report.failures, ["deploy/iam/x-trust-irsa.json: statement S trusts an OIDC provider "
                                           "without pinning the service account (:sub)"])

    def test_a_scoped_policy_passes_with_getmetricdata_on_any_resource(self):
        report = quiet_report()
        checks.check_iam(report, {"deploy/iam/p.json": {"Version": "2012-10-17", "Statement": [
            {"Sid": "Stream", "Action": ["kinesis:PutRecords"], "Resource": "arn:aws:kinesis:eu-west-1:1:stream/events"},
            {"Sid": "Metrics", "Action": "cloudwatch:GetMetricData", "Resource": "*"}]},
            "deploy/ecs/ignored.json": {}})
        self.assertPasses(report)
        self.assertEqual(len(report.passed), 1)

    def test_wildcards_and_a_wrong_version_fail(self):
        report = quiet_report()
        checks.check_iam(report, {"deploy/iam/p.json": {"Version": "2008-10-17", "Statement": [
            {"Sid": "All", "Action": "sqs:*", "Resource": "*"}]}})
        self.assertEqual(report.failures, [
            "deploy/iam/p.json: expected Version 2012-10-17 and a Statement list",
            "deploy/iam/p.json: statement All is not scoped to resources",
            "deploy/iam/p.json: statement All uses a wildcard action"])


class TaskDefinitionTest(CheckTest):
    def check(self, td, supervisor=False):
        report = quiet_report()
        path = "deploy/ecs/supervisor-task-definition.json" if supervisor else "deploy/ecs/task-definition.json"
        checks.check_task_definition(report, SETTINGS, path, td, supervisor)
        return report

    def test_the_collectors_passes(self):
        report = self.check(task_definition())
        self.assertPasses(report)
        self.assertEqual(report.passed, [
            "deploy/ecs/task-definition.json: required keys, `telemetry-collector`, non-root user, `healthcheck` "
            "(/healthz) check, awslogs, stopTimeout 40 > drain 20, 3 variables all read by the collector"])

    def test_the_supervisors_passes(self):
        report = self.check(task_definition(supervisor=True), supervisor=True)
        self.assertPasses(report)
        self.assertIn("`telemetry-collector supervise`", report.passed[0])
        self.assertIn("stopTimeout 10, 3 variables", report.passed[0])

    def test_a_missing_file_fails(self):
        self.assertEqual(self.check(None).failures, ["deploy/ecs/task-definition.json is missing"])

    def test_root_a_short_stop_timeout_and_a_wrong_command_fail(self):
        td = task_definition()
        c = td["containerDefinitions"][0]
        c.update(user="0", stopTimeout=20, command=["serve"])
        c["logConfiguration"]["options"]["awslogs-create-group"] = "true"
        del c["healthCheck"]
        del td["networkMode"]
        report = self.check(td)
        self.assertFails(report,
                         "deploy/ecs/task-definition.json: ECS task definition lacks networkMode",
                         "ECS container collector lacks healthCheck",
                         "ECS container collector: command ['serve'] is not ['telemetry-collector']",
                         "healthCheck is not the exec form of `telemetry-collector healthcheck`",
                         "ECS container collector: user is not a non-root uid",
                         "awslogs-create-group: the log group is created with a retention beforehand",
                         "stopTimeout 20 is not above SHUTDOWN_DRAIN_TIMEOUT_SEC 20")

    def test_the_drain_set_in_the_environment_counts(self):
        td = task_definition()
        td["containerDefinitions"][0]["environment"].append({"name": "SHUTDOWN_DRAIN_TIMEOUT_SEC", "value": "45"})
        self.assertFails(self.check(td), "stopTimeout 40 is not above SHUTDOWN_DRAIN_TIMEOUT_SEC 45")

    def test_a_supervisor_without_the_stream_or_with_an_unknown_variable_fails(self):
        td = task_definition(supervisor=True)
        td["containerDefinitions"][0]["environment"] = [{"name": "STREAM", "value": "events"}]
        report = self.check(td, supervisor=True)
        self.assertFails(report, "ECS container supervisor does not name the stream (EVENTS_DATA_STREAM_NAME)",
                         "environment sets STREAM, which the collector does not read")
        self.assertEqual(report.passed, [])


class SupervisorServiceTest(CheckTest):
    def test_one_task_of_its_own_family_with_its_own_role_passes(self):
        report = quiet_report()
        checks.check_supervisor_role(report, ecs_docs())
        checks.check_supervisor_service(report, ecs_docs())
        self.assertPasses(report)
        self.assertEqual(len(report.passed), 1)

    def test_the_collectors_role_fails(self):
        docs = ecs_docs()
        docs["deploy/ecs/supervisor-task-definition.json"]["taskRoleArn"] = docs["deploy/ecs/task-definition.json"]["taskRoleArn"]
        report = quiet_report()
        checks.check_supervisor_role(report, docs)
        self.assertFails(report, "the supervisor needs a task role of its own")

    def test_two_tasks_or_an_overlapping_rollout_fail(self):
        docs = ecs_docs()
        svc = docs["deploy/ecs/supervisor-service.json"]
        svc.update(desiredCount=2, taskDefinition="telemetry-collector", schedulingStrategy="DAEMON")
        svc["deploymentConfiguration"]["maximumPercent"] = 200
        del svc["cluster"]
        report = quiet_report()
        checks.check_supervisor_service(report, docs)
        self.assertEqual(report.failures, [
            "deploy/ecs/supervisor-service.json: desiredCount 2, must be 1",
            "deploy/ecs/supervisor-service.json: deploymentConfiguration must be minimumHealthyPercent 0, "
            "maximumPercent 100 (never two supervisors at once)",
            "deploy/ecs/supervisor-service.json: taskDefinition 'telemetry-collector' is not the supervisor's "
            "family 'telemetry-shard-supervisor'",
            "deploy/ecs/supervisor-service.json: schedulingStrategy must be REPLICA (DAEMON runs one per instance)",
            "deploy/ecs/supervisor-service.json lacks cluster, serviceName or networkConfiguration"])

    def test_a_missing_service_fails(self):
        report = quiet_report()
        checks.check_supervisor_service(report, {})
        self.assertEqual(report.failures, ["deploy/ecs/supervisor-service.json is missing"])


# --- Kubernetes ----------------------------------------------------------------------------------

def kinds_of(*objs):
    return checks.by_kind([(f"deploy/kubernetes/{o['kind'].lower()}.yaml", o) for o in objs])


class ConfigMapsTest(CheckTest):
    def test_generated_from_env_files_and_checked_by_name(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, "deploy/kubernetes/collector.env",
                  "# a comment\n\nAWS_REGION=eu-west-1\nEVENTS_DATA_STREAM_NAME=a=b\n")
            kinds = kinds_of({"kind": "Kustomization", "configMapGenerator": [
                {"name": "telemetry-collector", "envs": ["collector.env"]}]},
                {"kind": "ConfigMap", "metadata": {"name": "plain"}, "data": {"RUST_LOG": "info"}})
            maps = checks.config_maps(kinds, root)
        self.assertEqual(maps, {"plain": {"RUST_LOG": "info"},
                                "telemetry-collector": {"AWS_REGION": "eu-west-1", "EVENTS_DATA_STREAM_NAME": "a=b"}})
        report = quiet_report()
        checks.check_config_maps(report, SETTINGS, maps)
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/kubernetes ConfigMap plain: 1 variables all read by the collector",
                                         "deploy/kubernetes ConfigMap telemetry-collector: 2 variables all read by the collector"])

    def test_an_unknown_variable_fails(self):
        report = quiet_report()
        checks.check_config_maps(report, SETTINGS, {"telemetry-collector": {"QUEUE_URL": "x"}})
        self.assertFails(report, "ConfigMap telemetry-collector (deploy/kubernetes) sets QUEUE_URL, which the collector does not read")
        self.assertEqual(report.passed, [])


class DeploymentsTest(CheckTest):
    MAPS = {"telemetry-collector": {"SHUTDOWN_DRAIN_TIMEOUT_SEC": "20"}}

    def check(self, dep, maps=MAPS):
        report = quiet_report()
        checks.check_deployments(report, SETTINGS, kinds_of(dep), maps)
        return report

    def test_a_locked_down_deployment_passes(self):
        report = self.check(deployment())
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/kubernetes/deployment.yaml: probes /healthz and /readyz, non-root, "
                                         "read-only, caps dropped, grace 40 s > drain 20 s"])

    def test_wrong_probes_privileges_and_grace_fail(self):
        dep = deployment(configmap="missing")
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        c["livenessProbe"]["httpGet"]["path"] = "/"
        del c["readinessProbe"]
        c["securityContext"]["allowPrivilegeEscalation"] = True
        c["resources"] = {}
        c["env"] = [{"name": "TYPO", "value": "1"}]
        spec.update(automountServiceAccountToken=True, terminationGracePeriodSeconds=20, securityContext={})
        self.assertEqual(self.check(dep).failures, [
            "deploy/kubernetes/deployment.yaml: envFrom names ConfigMap missing, not in deploy/kubernetes",
            "deploy/kubernetes/deployment.yaml container collector env sets TYPO, which the collector does not read "
            "(not in the configuration table of docs/configuration.md, not AWS_*, not RUST_LOG)",
            "deploy/kubernetes/deployment.yaml: livenessProbe is not GET /healthz",
            "deploy/kubernetes/deployment.yaml: readinessProbe is not GET /readyz",
            "deploy/kubernetes/deployment.yaml: container collector must be read-only, no privilege escalation, drop ALL",
            "deploy/kubernetes/deployment.yaml: container collector has no memory limit",
            "deploy/kubernetes/deployment.yaml: the pod needs no Kubernetes API token: automountServiceAccountToken: false",
            "deploy/kubernetes/deployment.yaml: pod must runAsNonRoot with seccomp RuntimeDefault",
            "deploy/kubernetes/deployment.yaml: terminationGracePeriodSeconds 20 is not above SHUTDOWN_DRAIN_TIMEOUT_SEC 20"])

    def test_the_drain_of_the_configmap_counts(self):
        report = self.check(deployment(), {"telemetry-collector": {"SHUTDOWN_DRAIN_TIMEOUT_SEC": "60"}})
        self.assertFails(report, "terminationGracePeriodSeconds 40 is not above SHUTDOWN_DRAIN_TIMEOUT_SEC 60")


class ScalingAndScrapeTest(CheckTest):
    def check(self, *objs):
        report = quiet_report()
        objs = [(f"deploy/kubernetes/{o['kind'].lower()}.yaml", o) for o in objs]
        checks.check_scaling_and_scrape(report, objs, checks.by_kind(objs))
        return report

    def test_scraped_once_no_replicas_evictable_passes(self):
        report = self.check(deployment(annotations={"prometheus.io/scrape": "true"}), scaled_object(),
                            pod_disruption_budget())
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/kubernetes: no replicas beside the ScaledObject, PDB lets unhealthy "
                                         "pods be evicted, scrape annotations on the Pod template only"])

    def test_replicas_a_blocking_pdb_and_a_double_scrape_fail(self):
        dep = deployment(annotations={"prometheus.io/scrape": "true"})
        dep["spec"]["replicas"] = 2
        pdb = pod_disruption_budget()
        del pdb["spec"]["unhealthyPodEvictionPolicy"]
        service = {"kind": "Service", "metadata": {"name": "m", "annotations": {"prometheus.io/scrape": "true"}}}
        report = self.check(dep, scaled_object(), pdb, service)
        self.assertEqual(report.failures, [
            "deploy/kubernetes/deployment.yaml: sets replicas beside a ScaledObject that owns the count; every apply would reset it",
            "deploy/kubernetes/poddisruptionbudget.yaml: needs unhealthyPodEvictionPolicy: AlwaysAllow, or not-ready pods block node drains",
            "deploy/kubernetes: prometheus.io/scrape must be on exactly one of Pod and Service, found "
            "[('deploy/kubernetes/service.yaml', 'Service'), ('deploy/kubernetes/deployment.yaml', 'Pod template')]"])

    def test_no_scrape_annotation_fails(self):
        self.assertFails(self.check(deployment()), "prometheus.io/scrape must be on exactly one of Pod and Service, found []")


class KedaTest(CheckTest):
    def check(self, so, auth=None):
        report = quiet_report()
        checks.check_keda(report, kinds_of(deployment(), so, auth or trigger_authentication()))
        return report

    def test_a_breaker_aware_scaled_object_passes(self):
        report = self.check(scaled_object())
        self.assertPasses(report)
        self.assertTrue(report.passed[0].startswith("deploy/kubernetes/scaledobject.yaml: ScaledObject telemetry-collector (KEDA CRD"))

    def test_a_queue_url_of_its_own_and_no_breaker_fail(self):
        so = scaled_object()
        spec = so["spec"]
        spec["triggers"][0]["metadata"] = {"queueURL": "https://sqs/q", "awsRegion": "eu-west-1", "queueLength": 500}
        spec["triggers"][0]["authenticationRef"]["name"] = "other"
        del spec["triggers"][1]
        spec.update(minReplicaCount=0, scaleTargetRef={"name": "nothing"}, fallback={})
        auth = trigger_authentication()
        auth["spec"]["podIdentity"]["provider"] = "none"
        self.assertEqual(self.check(so, auth).failures, [
            "TriggerAuthentication aws: expected keda.sh/v1alpha1 with podIdentity.provider aws",
            "ScaledObject telemetry-collector: scaleTargetRef does not name a Deployment in deploy/kubernetes",
            "ScaledObject telemetry-collector: needs 1 <= minReplicaCount <= maxReplicaCount",
            "ScaledObject telemetry-collector: the SQS trigger must read queueURLFromEnv: SUBMISSIONS_QUEUE_URL",
            "ScaledObject telemetry-collector: trigger metadata queueLength missing or not a string",
            "ScaledObject telemetry-collector: authenticationRef does not name a TriggerAuthentication",
            "ScaledObject telemetry-collector: scalingModifiers must hold the count while the breaker is open",
            "ScaledObject telemetry-collector: no fallback replicas"])

    def test_other_trigger_types_and_queries_fail(self):
        so = scaled_object()
        so["apiVersion"] = "keda.sh/v2"
        so["spec"]["triggers"][1]["metadata"]["query"] = "up"
        so["spec"]["triggers"].append({"type": "cpu", "name": "cpu"})
        self.assertEqual(self.check(so).failures, [
            "ScaledObject telemetry-collector: apiVersion is not keda.sh/v1alpha1",
            "ScaledObject telemetry-collector: prometheus trigger breaker_open needs serverAddress and a collector metric query",
            "ScaledObject telemetry-collector: trigger type cpu is neither aws-sqs-queue nor prometheus"])


class PodMonitorsTest(CheckTest):
    def test_selecting_a_deployments_pods_on_a_named_port_passes(self):
        report = quiet_report()
        checks.check_pod_monitors(report, [pod_monitor()], kinds_of(deployment()))
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/prometheus/podmonitor.yaml: PodMonitor telemetry-collector selects "
                                         "telemetry-collector's pods, port http"])

    def test_an_unknown_port_or_label_fails(self):
        report = quiet_report()
        checks.check_pod_monitors(report, [pod_monitor(port="metrics"), pod_monitor(name="nobody")],
                                  kinds_of(deployment()))
        self.assertEqual(report.failures, [
            "deploy/prometheus/podmonitor.yaml: PodMonitor telemetry-collector selects no Deployment's pods or names a port they lack",
            "deploy/prometheus/podmonitor.yaml: PodMonitor nobody selects no Deployment's pods or names a port they lack"])


class KustomizationsTest(CheckTest):
    def test_listed_resources_must_exist(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, "deploy/kubernetes/deployment.yaml", "")
            kinds = checks.by_kind([("deploy/kubernetes/kustomization.yaml",
                                     {"kind": "Kustomization", "resources": ["deployment.yaml", "keda.yaml"]})])
            report = quiet_report()
            checks.check_kustomizations(report, kinds, root)
            self.assertEqual(report.failures, ["deploy/kubernetes/kustomization.yaml: resource keda.yaml does not exist"])
            write(root, "deploy/kubernetes/keda.yaml", "")
            report = quiet_report()
            checks.check_kustomizations(report, kinds, root)
        self.assertPasses(report)
        self.assertEqual(report.passed, ["deploy/kubernetes/kustomization.yaml: 2 resources exist"])


# --- docker-compose.yml --------------------------------------------------------------------------

class ComposeTest(CheckTest):
    def check(self, doc):
        report = quiet_report()
        checks.check_compose(report, SETTINGS, doc)
        return report

    def test_every_setting_at_its_default_passes(self):
        report = self.check(compose())
        self.assertPasses(report)
        self.assertEqual(report.passed, [
            "docker-compose.yml telemetry-collector: all 3 variables of docs/configuration.md with their defaults, "
            "nothing else but AWS_*/RUST_LOG",
            "docker-compose.yml: localstack/localstack:4.4.0, healthchecked; collector waits for service_healthy"])

    def test_the_list_form_of_environment_passes(self):
        doc = compose()
        doc["services"]["telemetry-collector"]["environment"] = [
            "SUBMISSIONS_QUEUE_URL", "EVENTS_DATA_STREAM_NAME=events", "SHUTDOWN_DRAIN_TIMEOUT_SEC=20"]
        self.assertPasses(self.check(doc))

    def test_a_missing_or_changed_default_and_an_unknown_name_fail(self):
        doc = compose()
        svc = doc["services"]["telemetry-collector"]
        env = svc["environment"]
        del env["SUBMISSIONS_QUEUE_URL"]
        env.update(EVENTS_DATA_STREAM_NAME="other", SHUTDOWN_DRAIN_TIMEOUT_SEC="40", TYPO="1")
        svc.update(depends_on={"localstack": {"condition": "service_started"}})
        ls = doc["services"]["localstack"]
        ls.update(image="localstack/localstack:latest", healthcheck={})
        report = self.check(doc)
        self.assertEqual(report.failures, [
            "docker-compose.yml telemetry-collector environment sets TYPO, which the collector does not read "
            "(not in the configuration table of docs/configuration.md, not AWS_*, not RUST_LOG)",
            "docker-compose.yml telemetry-collector environment lacks SUBMISSIONS_QUEUE_URL (documented default '')",
            "docker-compose.yml telemetry-collector sets EVENTS_DATA_STREAM_NAME='other', documented default is 'events'",
            "docker-compose.yml telemetry-collector sets SHUTDOWN_DRAIN_TIMEOUT_SEC='40', documented default is '20'",
            "docker-compose.yml: telemetry-collector must depend on localstack being service_healthy",
            "docker-compose.yml: stop_grace_period 30s is not above SHUTDOWN_DRAIN_TIMEOUT_SEC",
            "docker-compose.yml: localstack image 'localstack/localstack:latest' is not pinned to a version",
            "docker-compose.yml: localstack has no healthcheck"])

    def test_no_collector_service_fails(self):
        doc = compose()
        del doc["services"]["telemetry-collector"]
        self.assertFails(self.check(doc), "docker-compose.yml has no telemetry-collector service")


# --- The command line, on a small tree -----------------------------------------------------------

class CommandLineTest(CheckTest):
    """main() as script/lint-deploy calls it, in a scratch tree laid out like the repository."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = tmp.name
        write(self.root, "docs/configuration.md", README)
        for path, doc in ecs_docs().items():
            write(self.root, path, json.dumps(doc))
        write(self.root, "deploy/kubernetes/collector.env", "EVENTS_DATA_STREAM_NAME=events\n")
        write(self.root, "deploy/kubernetes/kustomization.yaml", yaml.safe_dump({
            "kind": "Kustomization", "resources": ["deployment.yaml", "keda.yaml"],
            "configMapGenerator": [{"name": "telemetry-collector", "envs": ["collector.env"]}]}))
        write(self.root, "deploy/kubernetes/deployment.yaml", yaml.safe_dump_all([
            deployment(annotations={"prometheus.io/scrape": "true"}), pod_disruption_budget()]))
        write(self.root, "deploy/kubernetes/keda.yaml", yaml.safe_dump_all([trigger_authentication(), scaled_object()]))
        write(self.root, "deploy/prometheus/podmonitor.yaml", yaml.safe_dump(pod_monitor()))
        write(self.root, "compose.yml", yaml.safe_dump(compose()))
        cwd = os.getcwd()
        os.chdir(self.root)
        self.addCleanup(os.chdir, cwd)

    def run_main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = checks.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_a_consistent_tree_passes(self):
        status, out, err = self.run_main("files", "--compose", "compose.yml", "variables")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.count("ok   "), 12, out)

    def test_only_the_named_checks_run(self):
        status, out, _ = self.run_main("files", "dockerfile", "json")
        self.assertEqual(status, 0)
        self.assertIn("ok   deploy/**/*.json: 3 files parse\n", out)
        self.assertNotIn("deploy/kubernetes", out)

    def test_a_broken_file_fails_with_a_count(self):
        write(self.root, "deploy/kubernetes/collector.env", "EVENTS_DATA_STREAM_NAME=events\nSTREAM=x\n")
        status, _, err = self.run_main("files", "kubernetes")
        self.assertEqual(status, 1)
        self.assertIn("FAIL ConfigMap telemetry-collector (deploy/kubernetes) sets STREAM, which the collector does not read", err)
        self.assertTrue(err.endswith("lint-deploy: 1 problem(s)\n"), err)

    def test_a_readme_without_the_table_fails_before_any_check(self):
        write(self.root, "docs/configuration.md", "# Nothing\n")
        self.assertEqual(self.run_main("files", "json"),
                         (1, "", "FAIL docs/configuration.md has no '# Configuration' heading\n"))

    def test_kustomize_prints_the_verdict_or_the_problem(self):
        write(self.root, "a.yaml", yaml.safe_dump_all(build("telemetry-collector-aaa", ("a", "telemetry-collector-aaa"))))
        write(self.root, "b.yaml", yaml.safe_dump_all(build("telemetry-collector-bbb", ("a", "telemetry-collector-bbb"))))
        self.assertEqual(self.run_main("kustomize", "a.yaml", "b.yaml"), (
            0, "ConfigMap telemetry-collector-aaa, named by a; a changed setting renames it telemetry-collector-bbb\n", ""))
        status, out, err = self.run_main("kustomize", "a.yaml", "a.yaml")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("a changed setting keeps the name ['telemetry-collector-aaa']", err)


if __name__ == "__main__":
    unittest.main()
