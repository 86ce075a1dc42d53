"""Cross-checks of the deployment files, run by script/lint-deploy.

The ECS and IAM JSON, the Kubernetes manifests (and their kustomize build) and the resolved
compose file must agree with one another and with the collector: every variable they set is one
it reads (the configuration table of docs/configuration.md, AWS_* and RUST_LOG), their grace
periods cover its drain, their probes and health checks reach its endpoints. Schema validators
cannot see any of that, hence these checks.

    checks.py kustomize BUILT CHANGED
        Two `kustomize build` outputs, the second with one setting changed: prints the verdict,
        or says on stderr what is wrong and exits 1.
    checks.py files [--readme PATH] [--compose RESOLVED] CHECK...
        The checks of deploy/ (json, kubernetes) and of the compose file (compose) named, all of
        them for `variables`: `ok   ...` lines on stdout, `FAIL ...` lines on stderr, exit 1 if
        any failed.

Paths are relative to the working directory, the repository root.
"""

import argparse
import glob
import json
import os
import re
import sys

import yaml


class CheckError(Exception):
    """A problem that leaves nothing further to check."""


class Report:
    """Prints each verdict as it is reached and remembers the failures, which decide the exit."""

    def __init__(self, out=None, err=None):
        self.out = sys.stdout if out is None else out
        self.err = sys.stderr if err is None else err
        self.failures = []
        self.passed = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL {msg}", file=self.err)

    def ok(self, msg):
        self.passed.append(msg)
        print(f"ok   {msg}", file=self.out)


def as_list(value):
    """IAM takes a single value or a list for Action and Resource."""
    return value if isinstance(value, list) else [value]


# --- The variables the collector reads ----------------------------------------------------------

def readme_settings(path):
    """The configuration table: {name: default}, '(unset)' read as ''."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("# Configuration", 1)
    if len(section) < 2:
        raise CheckError(f"{path} has no '# Configuration' heading")
    body = section[1].split("\n## ", 1)[0]
    settings = {}
    for line in body.splitlines():
        m = re.match(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", line)
        if m:
            raw = m.group(2).strip()
            settings[m.group(1)] = "" if raw == "(unset)" else raw.strip("`")
    if not settings:
        raise CheckError(f"{path}: no variable rows in its configuration table")
    return settings


class Settings:
    """The documented settings and where they are documented, for the messages."""

    def __init__(self, defaults, readme_path):
        self.defaults = defaults
        self.readme_path = readme_path
        # The drain every grace period must exceed when a file does not set its own.
        self.drain = int(defaults.get("SHUTDOWN_DRAIN_TIMEOUT_SEC", "20"))

    def allowed(self, name):
        return name in self.defaults or name.startswith("AWS_") or name == "RUST_LOG"


def check_names(report, settings, where, names):
    """Fails each name the collector would ignore: a typo there is a setting silently lost."""
    bad = [n for n in names if not settings.allowed(n)]
    for n in bad:
        report.fail(f"{where} sets {n}, which the collector does not read "
                    f"(not in the configuration table of {settings.readme_path}, not AWS_*, not RUST_LOG)")
    return not bad


# --- kustomize build ----------------------------------------------------------------------------

def load_yaml_all(path):
    """The documents of a YAML stream, empty ones left out."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def built_config_maps(docs):
    """The ConfigMaps of a build, and per Deployment the ConfigMaps its envFrom names."""
    maps = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    refs = {d["metadata"]["name"]: [r["configMapRef"]["name"] for c in d["spec"]["template"]["spec"]["containers"]
                                    for r in c.get("envFrom", [])]
            for d in docs if d["kind"] == "Deployment"}
    return maps, refs


def check_kustomize(built, changed):
    """The generated ConfigMap carries a hash of its content, so a changed setting rolls the pods.

    `built` and `changed` are the documents of two builds, the second with one setting changed.
    Returns the verdict; raises CheckError when the name is not generated, not followed by every
    Deployment or not changed with the content.
    """
    (maps, refs), (maps2, refs2) = built_config_maps(built), built_config_maps(changed)
    if len(maps) != 1 or not maps[0].startswith("telemetry-collector-"):
        raise CheckError(f"expected one generated ConfigMap telemetry-collector-<hash>, found {maps}")
    if not refs or any(r != [maps[0]] for r in refs.values()):
        raise CheckError(f"Deployments do not all name {maps[0]}: {refs}")
    if maps2 == maps or any(r != maps2 for r in refs2.values()):
        raise CheckError(f"a changed setting keeps the name {maps} or is not followed by the Deployments: {refs2}")
    return f"ConfigMap {maps[0]}, named by {', '.join(sorted(refs))}; a changed setting renames it {maps2[0]}"


# --- JSON files: IAM policies, ECS task definitions and service ---------------------------------

# The collector's task definition and the shard supervisor's (`supervise`, one task): path, and
# whether it is the supervisor's.
TASK_DEFINITIONS = {
    "deploy/ecs/task-definition.json": False,
    "deploy/ecs/supervisor-task-definition.json": True,
}

# Actions AWS grants on no resource but "*" (they take no resource-level permissions).
UNSCOPABLE_ACTIONS = {"cloudwatch:GetMetricData"}


def load_json_files(report, root="."):
    """Every deploy/**/*.json that parses, by path; each one that does not is a failure."""
    docs = {}
    for path in sorted(glob.glob("deploy/**/*.json", root_dir=root, recursive=True)):
        try:
            with open(os.path.join(root, path), encoding="utf-8") as f:
                docs[path] = json.load(f)
        except json.JSONDecodeError as e:
            report.fail(f"{path}: not JSON: {e}")
    report.ok(f"deploy/**/*.json: {len(docs)} files parse")
    return docs


def check_trust_policy(report, path, doc):
    """A role's trust policy: who may assume it, never what it may do."""
    for s in doc.get("Statement", []):
        acts = as_list(s.get("Action"))
        if not s.get("Principal") or "Resource" in s or not all(str(a).startswith("sts:") for a in acts):
            report.fail(f"{path}: statement {s.get('Sid')} is not a trust statement (Principal, sts: actions, no Resource)")
        # Without a :sub condition every service account of the cluster could take the role.
        if "Federated" in s.get("Principal", {}) and not any(k.endswith(":sub") for c in s.get("Condition", {}).values() for k in c):
            report.fail(f"{path}: statement {s.get('Sid')} trusts an OIDC provider without pinning the service account (:sub)")
    report.ok(f"{path}: trust policy, every statement a principal with sts: actions")


def check_permissions_policy(report, path, doc):
    """Least privilege: named resources (where AWS allows it) and named actions."""
    stmts = doc.get("Statement", [])
    if doc.get("Version") != "2012-10-17" or not stmts:
        report.fail(f"{path}: expected Version 2012-10-17 and a Statement list")
    for s in stmts:
        res = as_list(s.get("Resource"))
        acts = as_list(s.get("Action"))
        if any(r in (None, "*") for r in res) and not set(acts) <= UNSCOPABLE_ACTIONS:
            report.fail(f"{path}: statement {s.get('Sid')} is not scoped to resources")
        if any(a is None or "*" in a for a in acts):
            report.fail(f"{path}: statement {s.get('Sid')} uses a wildcard action")
    report.ok(f"{path}: IAM policy, every statement resource-scoped (but GetMetricData), no wildcard actions")


def check_iam(report, docs):
    """The policies under deploy/iam/: trust policies are named `*-trust-*`."""
    for path, doc in docs.items():
        if not path.startswith("deploy/iam/"):
            continue
        if "-trust-" in path:
            check_trust_policy(report, path, doc)
        else:
            check_permissions_policy(report, path, doc)


def check_task_definition(report, settings, path, td, supervisor):
    """An ECS task definition runs the image as the collector (or its supervisor) expects.

    `td` is the parsed file, None when it is missing.
    """
    if td is None:
        report.fail(f"{path} is missing")
        return
    for key in ("family", "containerDefinitions", "taskRoleArn", "networkMode"):
        if key not in td:
            report.fail(f"{path}: ECS task definition lacks {key}")
    for c in td.get("containerDefinitions", []):
        name = c.get("name", "?")
        for key in ("name", "image", "essential", "healthCheck", "stopTimeout", "logConfiguration", "environment", "command"):
            if key not in c:
                report.fail(f"{path}: ECS container {name} lacks {key}")
        # The image has no ENTRYPOINT: `command` replaces its CMD, binary first.
        command = c.get("command", [])
        expected = ["telemetry-collector", "supervise"] if supervisor else ["telemetry-collector"]
        if command != expected:
            report.fail(f"{path}: ECS container {name}: command {command} is not {expected}")
        hc = c.get("healthCheck", {}).get("command", [])
        if hc[:1] != ["CMD"] or not hc[-1:] == ["healthcheck"]:
            report.fail(f"{path}: ECS container {name}: healthCheck is not the exec form of `telemetry-collector healthcheck` (which probes /healthz)")
        if str(c.get("user", "root")).split(":")[0] in ("root", "0", ""):
            report.fail(f"{path}: ECS container {name}: user is not a non-root uid")
        if c.get("logConfiguration", {}).get("logDriver") != "awslogs":
            report.fail(f"{path}: ECS container {name}: logDriver is not awslogs")
        if str(c.get("logConfiguration", {}).get("options", {}).get("awslogs-create-group", "false")).lower() == "true":
            report.fail(f"{path}: ECS container {name}: awslogs-create-group: the log group is created with a retention "
                        f"beforehand (deploy/ecs/log-group.json), not by the log driver")
        env = {e["name"]: e.get("value", "") for e in c.get("environment", [])}
        if supervisor:
            # It stops at once on SIGTERM: no drain to cover.
            stop = f"stopTimeout {c.get('stopTimeout')}"
            if "EVENTS_DATA_STREAM_NAME" not in env:
                report.fail(f"{path}: ECS container {name} does not name the stream (EVENTS_DATA_STREAM_NAME)")
        else:
            env_drain = int(env.get("SHUTDOWN_DRAIN_TIMEOUT_SEC", settings.drain))
            stop = f"stopTimeout {c.get('stopTimeout')} > drain {env_drain}"
            if not c.get("stopTimeout", 0) > env_drain:
                report.fail(f"{path}: ECS container {name}: stopTimeout {c.get('stopTimeout')} is not above "
                            f"SHUTDOWN_DRAIN_TIMEOUT_SEC {env_drain}")
        if check_names(report, settings, f"{path} ECS container {name} environment", env):
            report.ok(f"{path}: required keys, `{' '.join(command)}`, non-root user, `healthcheck` (/healthz) check, awslogs, "
                      f"{stop}, {len(env)} variables all read by the collector")


def check_supervisor_role(report, docs):
    """The supervisor resizes the stream: a permission the collector's role must not carry."""
    collector_td = docs.get("deploy/ecs/task-definition.json", {})
    supervisor_td = docs.get("deploy/ecs/supervisor-task-definition.json", {})
    if supervisor_td and supervisor_td.get("taskRoleArn") == collector_td.get("taskRoleArn"):
        report.fail("deploy/ecs/supervisor-task-definition.json: the supervisor needs a task role of its own "
                    "(deploy/iam/supervisor-policy.json), not the collector's")


def check_supervisor_service(report, docs):
    """The supervisor's ECS service keeps exactly one task, even during a rollout."""
    svc = docs.get("deploy/ecs/supervisor-service.json")
    if svc is None:
        report.fail("deploy/ecs/supervisor-service.json is missing")
        return
    supervisor_td = docs.get("deploy/ecs/supervisor-task-definition.json", {})
    dc = svc.get("deploymentConfiguration", {})
    if svc.get("desiredCount") != 1:
        report.fail(f"deploy/ecs/supervisor-service.json: desiredCount {svc.get('desiredCount')}, must be 1")
    # A rollout stops the old task before it starts the new one: never two supervisors.
    if dc.get("minimumHealthyPercent") != 0 or dc.get("maximumPercent") != 100:
        report.fail("deploy/ecs/supervisor-service.json: deploymentConfiguration must be minimumHealthyPercent 0, "
                    "maximumPercent 100 (never two supervisors at once)")
    if svc.get("taskDefinition") != supervisor_td.get("family"):
        report.fail(f"deploy/ecs/supervisor-service.json: taskDefinition {svc.get('taskDefinition')!r} is not the "
                    f"supervisor's family {supervisor_td.get('family')!r}")
    if svc.get("schedulingStrategy", "REPLICA") != "REPLICA":
        report.fail("deploy/ecs/supervisor-service.json: schedulingStrategy must be REPLICA (DAEMON runs one per instance)")
    if not [k for k in ("cluster", "serviceName", "networkConfiguration") if k not in svc]:
        report.ok("deploy/ecs/supervisor-service.json: one task of the supervisor's family, "
                  "minimumHealthyPercent 0 / maximumPercent 100")
    else:
        report.fail("deploy/ecs/supervisor-service.json lacks cluster, serviceName or networkConfiguration")


def json_checks(report, settings, root="."):
    """deploy/**/*.json: every file parses; IAM policies, ECS task definitions and service."""
    docs = load_json_files(report, root)
    check_iam(report, docs)
    for path, supervisor in TASK_DEFINITIONS.items():
        check_task_definition(report, settings, path, docs.get(path), supervisor)
    check_supervisor_role(report, docs)
    check_supervisor_service(report, docs)


# --- Kubernetes: cross-file checks, KEDA structure ----------------------------------------------

def load_manifests(root="."):
    """(path, object) for every object of deploy/kubernetes/*.yaml, in file order."""
    objs = []
    for path in sorted(glob.glob("deploy/kubernetes/*.yaml", root_dir=root)):
        for d in load_yaml_all(os.path.join(root, path)):
            objs.append((path, d))
    return objs


def by_kind(objs):
    """{kind: [(path, object)]}."""
    kinds = {}
    for path, d in objs:
        kinds.setdefault(d.get("kind"), []).append((path, d))
    return kinds


def read_env_file(path):
    """VAR=value lines, as kustomize's configMapGenerator reads them (blank lines and # comments skipped)."""
    data = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                data[key] = value
    return data


def config_maps(kinds, root="."):
    """{name: data} of the ConfigMaps written out and of those kustomize generates from env files.

    Generated ones are named with a hash of their content, so that a change rolls the pods; here
    they go by the generator's name, which is what the Deployments name before the build.
    """
    maps = {d["metadata"]["name"]: d.get("data", {}) for _, d in kinds.get("ConfigMap", [])}
    for kpath, k in kinds.get("Kustomization", []):
        for gen in k.get("configMapGenerator", []):
            data = {}
            for env_file in gen.get("envs", []):
                data.update(read_env_file(os.path.join(root, os.path.dirname(kpath), env_file)))
            maps[gen["name"]] = data
    return maps


def check_config_maps(report, settings, maps):
    for name, data in maps.items():
        if check_names(report, settings, f"ConfigMap {name} (deploy/kubernetes)", data):
            report.ok(f"deploy/kubernetes ConfigMap {name}: {len(data)} variables all read by the collector")


def check_deployments(report, settings, kinds, maps):
    """Each Deployment: probes on the collector's endpoints, locked down, grace above the drain."""
    for path, dep in kinds.get("Deployment", []):
        spec = dep["spec"]["template"]["spec"]
        cm_drain = settings.drain
        for c in spec["containers"]:
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm not in maps:
                    report.fail(f"{path}: envFrom names ConfigMap {cm}, not in deploy/kubernetes")
                else:
                    cm_drain = int(maps[cm].get("SHUTDOWN_DRAIN_TIMEOUT_SEC", settings.drain))
            check_names(report, settings, f"{path} container {c['name']} env", [e["name"] for e in c.get("env", [])])
            if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                report.fail(f"{path}: livenessProbe is not GET /healthz")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                report.fail(f"{path}: readinessProbe is not GET /readyz")
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and "ALL" in sc.get("capabilities", {}).get("drop", [])):
                report.fail(f"{path}: container {c['name']} must be read-only, no privilege escalation, drop ALL")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                report.fail(f"{path}: container {c['name']} has no memory limit")
        if spec.get("automountServiceAccountToken") is not False:
            report.fail(f"{path}: the pod needs no Kubernetes API token: automountServiceAccountToken: false")
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            report.fail(f"{path}: pod must runAsNonRoot with seccomp RuntimeDefault")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if not grace > cm_drain:
            report.fail(f"{path}: terminationGracePeriodSeconds {grace} is not above SHUTDOWN_DRAIN_TIMEOUT_SEC {cm_drain}")
        report.ok(f"{path}: probes /healthz and /readyz, non-root, read-only, caps dropped, "
                  f"grace {grace} s > drain {cm_drain} s")


def check_scaling_and_scrape(report, objs, kinds):
    """No replicas fighting KEDA, PDBs that do not block drains, each series scraped once."""
    scaled = {so.get("spec", {}).get("scaleTargetRef", {}).get("name") for _, so in kinds.get("ScaledObject", [])}
    for path, dep in kinds.get("Deployment", []):
        if dep["metadata"]["name"] in scaled and "replicas" in dep["spec"]:
            report.fail(f"{path}: sets replicas beside a ScaledObject that owns the count; every apply would reset it")
    for path, pdb in kinds.get("PodDisruptionBudget", []):
        if pdb.get("spec", {}).get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            report.fail(f"{path}: needs unhealthyPodEvictionPolicy: AlwaysAllow, or not-ready pods block node drains")
    scraped = [(path, d["kind"]) for path, d in objs
               if d.get("kind") == "Service" and d.get("metadata", {}).get("annotations", {}).get("prometheus.io/scrape")]
    # The collector's pods (the shard supervisor's Deployment is scraped on its own pod).
    scraped += [(path, "Pod template") for path, d in kinds.get("Deployment", [])
                if d["metadata"]["name"] == "telemetry-collector"
                and d["spec"]["template"].get("metadata", {}).get("annotations", {}).get("prometheus.io/scrape")]
    if len(scraped) != 1:
        report.fail(f"deploy/kubernetes: prometheus.io/scrape must be on exactly one of Pod and Service, found {scraped}")
    else:
        report.ok(f"deploy/kubernetes: no replicas beside the ScaledObject, PDB lets unhealthy pods be evicted, "
                  f"scrape annotations on the {scraped[0][1]} only")


def check_keda(report, kinds):
    """The KEDA objects, by structure: their CRDs have no schema in kubernetes-validate."""
    deployments = {d["metadata"]["name"] for _, d in kinds.get("Deployment", [])}
    auths = {d["metadata"]["name"]: d for _, d in kinds.get("TriggerAuthentication", [])}
    for name, ta in auths.items():
        if ta.get("apiVersion") != "keda.sh/v1alpha1" or ta.get("spec", {}).get("podIdentity", {}).get("provider") != "aws":
            report.fail(f"TriggerAuthentication {name}: expected keda.sh/v1alpha1 with podIdentity.provider aws")
    for path, so in kinds.get("ScaledObject", []):
        name = so["metadata"]["name"]
        spec = so.get("spec", {})
        if so.get("apiVersion") != "keda.sh/v1alpha1":
            report.fail(f"ScaledObject {name}: apiVersion is not keda.sh/v1alpha1")
        if spec.get("scaleTargetRef", {}).get("name") not in deployments:
            report.fail(f"ScaledObject {name}: scaleTargetRef does not name a Deployment in deploy/kubernetes")
        if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
            report.fail(f"ScaledObject {name}: needs 1 <= minReplicaCount <= maxReplicaCount")
        names = {t.get("name") for t in spec.get("triggers", [])}
        for t in spec.get("triggers", []):
            md = t.get("metadata", {})
            if t.get("type") == "aws-sqs-queue":
                # The queue URL comes from the collector's own environment, so it cannot differ.
                if md.get("queueURLFromEnv") != "SUBMISSIONS_QUEUE_URL" or "queueURL" in md:
                    report.fail(f"ScaledObject {name}: the SQS trigger must read queueURLFromEnv: SUBMISSIONS_QUEUE_URL")
                for key in ("awsRegion", "queueLength"):
                    if not isinstance(md.get(key), str) or not md.get(key):
                        report.fail(f"ScaledObject {name}: trigger metadata {key} missing or not a string")
                if t.get("authenticationRef", {}).get("name") not in auths:
                    report.fail(f"ScaledObject {name}: authenticationRef does not name a TriggerAuthentication")
            elif t.get("type") == "prometheus":
                if not md.get("serverAddress") or "telemetry_collector_" not in md.get("query", ""):
                    report.fail(f"ScaledObject {name}: prometheus trigger {t.get('name')} needs serverAddress and a collector metric query")
            else:
                report.fail(f"ScaledObject {name}: trigger type {t.get('type')} is neither aws-sqs-queue nor prometheus")
        modifiers = spec.get("advanced", {}).get("scalingModifiers", {})
        formula = modifiers.get("formula", "")
        # The breaker holds the count: a backlog Kinesis causes is not worked off by more pods.
        if "breaker_open" not in names or "breaker_open" not in formula or not modifiers.get("target"):
            report.fail(f"ScaledObject {name}: scalingModifiers must hold the count while the breaker is open")
        if not spec.get("fallback", {}).get("replicas"):
            report.fail(f"ScaledObject {name}: no fallback replicas")
        if not spec.get("triggers"):
            report.fail(f"ScaledObject {name}: no triggers")
        report.ok(f"{path}: ScaledObject {name} (KEDA CRD, checked by structure: target, queue URL from the "
                  f"environment, breaker-aware scaling modifiers, fallback, TriggerAuthentication with aws pod identity)")


def load_pod_monitors(root="."):
    """The documents of deploy/prometheus/podmonitor.yaml."""
    with open(os.path.join(root, "deploy/prometheus/podmonitor.yaml"), encoding="utf-8") as f:
        return list(yaml.safe_load_all(f))


def check_pod_monitors(report, monitors, kinds):
    """The Prometheus Operator's path: each PodMonitor selects the pods of a Deployment here, on a
    port its container names."""
    for d in monitors:
        name = d["metadata"]["name"]
        wanted = d["spec"]["selector"]["matchLabels"]
        targets = [dep for _, dep in kinds.get("Deployment", [])
                   if wanted.items() <= dep["spec"]["template"]["metadata"].get("labels", {}).items()]
        ports = {p.get("name") for dep in targets for c in dep["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        endpoints = d["spec"]["podMetricsEndpoints"]
        if d.get("kind") != "PodMonitor" or not targets or any(e.get("port") not in ports for e in endpoints):
            report.fail(f"deploy/prometheus/podmonitor.yaml: PodMonitor {name} selects no Deployment's pods or names a port they lack")
        else:
            report.ok(f"deploy/prometheus/podmonitor.yaml: PodMonitor {name} selects {targets[0]['metadata']['name']}'s pods, port {endpoints[0]['port']}")


def check_kustomizations(report, kinds, root="."):
    """Every resource a kustomization.yaml lists exists beside it."""
    for path, k in kinds.get("Kustomization", []):
        missing = [r for r in k.get("resources", []) if not os.path.exists(os.path.join(root, os.path.dirname(path), r))]
        for r in missing:
            report.fail(f"{path}: resource {r} does not exist")
        if not missing:
            report.ok(f"{path}: {len(k.get('resources', []))} resources exist")


def kubernetes_checks(report, settings, root="."):
    """deploy/kubernetes/ across its files, and deploy/prometheus/podmonitor.yaml against it."""
    objs = load_manifests(root)
    kinds = by_kind(objs)
    maps = config_maps(kinds, root)
    check_config_maps(report, settings, maps)
    check_deployments(report, settings, kinds, maps)
    check_scaling_and_scrape(report, objs, kinds)
    check_keda(report, kinds)
    check_pod_monitors(report, load_pod_monitors(root), kinds)
    check_kustomizations(report, kinds, root)


# --- docker-compose.yml: the collector's environment --------------------------------------------

def compose_environment(svc):
    """A service's environment as {name: value}, from either of compose's forms."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def check_compose(report, settings, compose):
    """The compose file doubles as a template: every setting, at its documented default.

    `compose` is the file as `docker compose config` resolves it (anchors and merges applied).
    """
    services = compose.get("services", {})
    svc = services.get("telemetry-collector")
    if svc is None:
        report.fail("docker-compose.yml has no telemetry-collector service")
    else:
        env = compose_environment(svc)
        names_ok = check_names(report, settings, "docker-compose.yml telemetry-collector environment", env)
        complete = True
        for name, default in settings.defaults.items():
            if name not in env:
                complete = False
                report.fail(f"docker-compose.yml telemetry-collector environment lacks {name} "
                            f"(documented default {default!r})")
            elif env[name] != default:
                complete = False
                report.fail(f"docker-compose.yml telemetry-collector sets {name}={env[name]!r}, "
                            f"documented default is {default!r}")
        if names_ok and complete:
            report.ok(f"docker-compose.yml telemetry-collector: all {len(settings.defaults)} variables of {settings.readme_path} "
                      f"with their defaults, nothing else but AWS_*/RUST_LOG")
        if svc.get("depends_on", {}).get("localstack", {}).get("condition") != "service_healthy":
            report.fail("docker-compose.yml: telemetry-collector must depend on localstack being service_healthy")
        grace = svc.get("stop_grace_period", "10s")
        m = re.fullmatch(r"(\d+)s", str(grace))
        if not m or int(m.group(1)) <= int(env.get("SHUTDOWN_DRAIN_TIMEOUT_SEC", settings.drain)):
            report.fail(f"docker-compose.yml: stop_grace_period {grace} is not above SHUTDOWN_DRAIN_TIMEOUT_SEC")
    ls = services.get("localstack", {})
    image = ls.get("image", "")
    if not re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", image):
        report.fail(f"docker-compose.yml: localstack image {image!r} is not pinned to a version")
    if not ls.get("healthcheck", {}).get("test"):
        report.fail("docker-compose.yml: localstack has no healthcheck")
    report.ok(f"docker-compose.yml: {image}, healthchecked; collector waits for service_healthy")


# --- Command line -------------------------------------------------------------------------------

def run_files(report, checks, readme_path, compose_path=None, root="."):
    """The file checks named in `checks` (`variables` means all of them), in a fixed order."""
    settings = Settings(readme_settings(readme_path), readme_path)
    if "json" in checks or "variables" in checks:
        json_checks(report, settings, root)
    if "kubernetes" in checks or "variables" in checks:
        kubernetes_checks(report, settings, root)
    if "compose" in checks or "variables" in checks:
        with open(compose_path, encoding="utf-8") as f:
            check_compose(report, settings, yaml.safe_load(f))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Cross-checks of the deployment files (script/lint-deploy).")
    commands = parser.add_subparsers(dest="command", required=True)
    kustomize = commands.add_parser("kustomize", help="check two kustomize builds, the second with a setting changed")
    kustomize.add_argument("built")
    kustomize.add_argument("changed")
    files = commands.add_parser("files", help="check deploy/ and the compose file")
    files.add_argument("--readme", default="docs/configuration.md",
                       help="the configuration table (default: %(default)s)")
    files.add_argument("--compose", help="docker-compose.yml as `docker compose config` resolved it")
    files.add_argument("checks", nargs="+", metavar="CHECK",
                       help="json, kubernetes, compose or variables (all three); others are ignored")
    args = parser.parse_args(argv)

    if args.command == "kustomize":
        try:
            print(check_kustomize(load_yaml_all(args.built), load_yaml_all(args.changed)))
        except CheckError as e:
            print(e, file=sys.stderr)
            return 1
        return 0

    if ("compose" in args.checks or "variables" in args.checks) and not args.compose:
        parser.error("compose and variables need --compose")
    report = Report()
    try:
        run_files(report, args.checks, args.readme, args.compose)
    except CheckError as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    if report.failures:
        print(f"lint-deploy: {len(report.failures)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
