#!/usr/bin/env python3
"""Checks envoy/compose/ as far as a machine without a Docker engine can (scripts/test.sh runs it
with .venv/bin/python after scripts/setup.sh):

- docker-compose.yaml is valid against the Compose Specification schema (.cache/compose_spec.json);
- every build names envoy/compose/Dockerfile from the repository root and a stage it defines; every
  COPY source outside the build stage exists;
- the images are pinned to what the project tests with: Envoy at scripts/setup.sh's version, Rust at
  rust-toolchain.toml's;
- every cluster host in envoy.yaml is a compose service listening on that port (that the file is
  what `cargo xtask chain-config --compose` writes is a test of xtask).

The build steps themselves are scripts/docker-build.sh, which scripts/test.sh runs.
"""
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "envoy" / "compose"
errors = []


def check(ok, msg):
    if not ok:
        errors.append(msg)


compose = yaml.safe_load((COMPOSE / "docker-compose.yaml").read_text())
schema = json.loads((ROOT / ".cache" / "compose_spec.json").read_text())
# The schema says draft 2019-09 (with a trailing "#" jsonschema does not recognise).
validator = jsonschema.Draft201909Validator(schema)
for e in validator.iter_errors(compose):
    errors.append(f"docker-compose.yaml: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")

dockerfile = (COMPOSE / "Dockerfile").read_text()
stages = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", dockerfile, re.M | re.I)
names = {name for _, name in stages}
services = compose.get("services", {})
for name, svc in services.items():
    build = svc.get("build")
    if build is None:
        continue
    check((COMPOSE / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository root")
    check((COMPOSE / build["context"] / build["dockerfile"]).resolve() == COMPOSE / "Dockerfile", f"{name}: dockerfile is not envoy/compose/Dockerfile")
    check(build.get("target") in names, f"{name}: target {build.get('target')!r} is not a stage of the Dockerfile {sorted(names)}")
for flags, src in re.findall(r"^COPY\s+((?:--\S+\s+)*)(\S+)\s", dockerfile, re.M):
    if "--from=" not in flags:
        check(src == "." or (ROOT / src).exists(), f"Dockerfile: COPY source {src} does not exist")

envoy_version = re.search(r"^ENVOY_VERSION=(\S+)", (ROOT / "scripts" / "setup.sh").read_text(), re.M).group(1)
rust_version = re.search(r'^channel = "(\S+)"', (ROOT / "rust-toolchain.toml").read_text(), re.M).group(1)
images = [image for image, _ in stages]
check(f"envoyproxy/envoy:v{envoy_version}" in images, f"Dockerfile: Envoy is not pinned to v{envoy_version} (scripts/setup.sh)")
check(any(i.startswith(f"rust:{rust_version}-") for i in images), f"Dockerfile: Rust is not pinned to {rust_version} (rust-toolchain.toml)")

# That envoy.yaml is what `cargo xtask chain-config --compose` writes is checked by
# xtask's chain::tests::the_compose_config_is_current.
envoy = yaml.safe_load((COMPOSE / "envoy.yaml").read_text())
for cluster in envoy["static_resources"]["clusters"]:
    for group in cluster["load_assignment"]["endpoints"]:
        for ep in group["lb_endpoints"]:
            addr = ep["endpoint"]["address"]["socket_address"]
            host, port = addr["address"], addr["port_value"]
            svc = services.get(host)
            if svc is None:
                errors.append(f"envoy.yaml: cluster {cluster['name']} points at {host}, not a compose service")
                continue
            command = " ".join(map(str, svc.get("command", [])))
            check(f"0.0.0.0:{port}" in command, f"envoy.yaml: cluster {cluster['name']}: service {host} does not listen on {port}")
            check(cluster.get("type") == "STRICT_DNS", f"envoy.yaml: cluster {cluster['name']} needs STRICT_DNS to resolve {host}")

if errors:
    print("\n".join(f"check-compose: {e}" for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"check-compose: docker-compose.yaml valid ({len(services)} services), Dockerfile stages {sorted(names)}, envoy.yaml current")
