#!/usr/bin/env bash
# Build the pinned control-plane binaries from their Go modules into a cache folder.
#   usage: hack/build-bins.sh [--dir] [DEST]     (--dir: only print the destination folder)
# DEST defaults to ${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/bin/<key>, where <key> is derived
# from hack/versions.env, this script and the k8s tools module, so a version bump builds a fresh folder and an
# unchanged one is reused. Prints the destination folder as the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
source "$here/versions.env"
print_only=0
if [[ "${1:-}" == "--dir" ]]; then print_only=1; shift; fi
key="k8s-${KUBERNETES_VERSION}-$(cat "$here/versions.env" "$here/build-bins.sh" "$here/tools/k8s/go.mod" "$here/tools/k8s/go.sum" | sha256sum | cut -c1-12)"
dest="${1:-${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/$key}"
if [[ $print_only == 1 ]]; then echo "$dest"; exit 0; fi
mkdir -p "$dest"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm kwok-stages.yaml)
missing=()
for b in "${want[@]}"; do [[ -e "$dest/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "[build-bins] all binaries present in $dest" >&2
  echo "$dest"; exit 0
fi
start=$(date +%s)
step() { echo "[build-bins] $(( $(date +%s) - start ))s: $*" >&2; }
major=${KUBERNETES_VERSION#v}; major=${major%%.*}
minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $p.gitVersion=${KUBERNETES_VERSION} -X $p.gitMajor=${major} -X $p.gitMinor=${minor}"
  ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
cd "$here/tools/k8s"
k8s_missing=()
for b in "${missing[@]}"; do
  case $b in
    etcd) k8s_missing+=(./etcd) ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) k8s_missing+=("k8s.io/kubernetes/cmd/$b") ;;
  esac
done
if [[ ${#k8s_missing[@]} -gt 0 ]]; then
  step "downloading modules for Kubernetes ${KUBERNETES_VERSION} and etcd ${ETCD_VERSION}"
  go mod download
  step "compiling ${k8s_missing[*]} (cold: ~4-5 min on 2 cores; progress every 50 packages)"
  tmp=$(mktemp -d "$dest/.build.XXXX")
  go build -v -trimpath -ldflags "$ld" -o "$tmp/" "${k8s_missing[@]}" 2>&1 \
    | awk '{n++; if (n % 50 == 0) { printf "[build-bins]   %d packages compiled (last: %s)\n", n, $0; fflush() } }' >&2
  mv "$tmp"/* "$dest/"; rmdir "$tmp"
fi
for b in "${missing[@]}"; do
  case $b in
    kwok-stages.yaml)
          # KWOK's own stage definitions from the same pinned module (unmodified): nodes become Ready
          # and keep a heartbeat lease; pods go through create -> init containers -> Ready -> delete.
          step "collecting KWOK ${KWOK_VERSION} stages (node fast + lease heartbeat, pod general)"
          kdir=$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
          st="$kdir/kustomize/stage"
          for f in "$st"/node/fast/node-initialize.yaml "$st"/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
                   "$st"/pod/general/pod-{create,init-container-running,init-container-completed,ready,complete,delete}.yaml; do
            echo "---"; cat "$f"
          done > "$dest/kwok-stages.yaml.tmp"
          mv "$dest/kwok-stages.yaml.tmp" "$dest/kwok-stages.yaml" ;;
    kwok) step "go install sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
          GOBIN="$dest" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" ;;
    helm) step "go install helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
          # As helm's Makefile does: the default Kubernetes version for lint/template comes from the
          # client-go minor helm is built with (v0.37 -> 1.37), not the 1.20 fallback.
          hk="-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_K8S_MINOR}"
          hk+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_K8S_MINOR}"
          GOBIN="$dest" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} $hk" \
            "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" ;;
  esac
done
for b in "${want[@]}"; do [[ -e "$dest/$b" ]] || { echo "[build-bins] missing $dest/$b after build" >&2; exit 1; }; done
step "done"
echo "$dest"
