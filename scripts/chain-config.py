#!/usr/bin/env python3
"""Writes the whole-chain Envoy config: envoy/envoy.yaml with the six filters' snippets
(envoy/filters/*.yaml) inserted before the router in the order of ARCHITECTURE.md.

One generator for every place the chain runs, so they cannot drift apart:
  scripts/demo.sh       --wasm-root "$PWD" --port 10000=... (loopback, the local demo)
  envoy/compose/        --compose (service host names; `scripts/chain-config.py --compose
                        --out envoy/compose/envoy.yaml` regenerates it, and the tests check it is current)
  a real provider       --provider https://api.openai.com --provider-key-env OPENAI_API_KEY: every
                        LLM cluster goes to that host over TLS, and Envoy replaces the client's
                        Authorization header with the provider key (jwt-auth has already removed
                        the client's token). The key is written into the generated file.

Only the Python standard library: the edits are on the text of our own config, whose layout the
tests pin (they validate every output with `envoy --mode validate`).
"""
import argparse
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ["jwt-auth", "prompt-templater", "content-moderator", "semantic-router", "response-cache", "token-counter"]
ROUTER = "                  - name: envoy.filters.http.router\n"
LLM_CLUSTERS = ["llm_upstream", "llm_code", "llm_math", "llm_support"]
# Where each default port lives in docker-compose (envoy/compose/docker-compose.yaml).
COMPOSE_HOSTS = {8081: "mock", 8091: "mock", 8092: "mock", 8093: "mock", 8094: "mock", 50051: "sidecar", 8083: "issuer"}


def fail(msg):
    sys.exit(f"chain-config: {msg}")


def insert_filters(config, filters):
    if config.count(ROUTER) != 1:
        fail("envoy/envoy.yaml must have exactly one envoy.filters.http.router")
    text = ""
    for name in filters:
        path = ROOT / "envoy" / "filters" / f"{name}.yaml"
        if not path.exists():
            fail(f"no snippet {path}")
        text += "".join(l for l in path.read_text(encoding="utf-8").splitlines(keepends=True) if not l.startswith("#"))
    return config.replace(ROUTER, text + ROUTER)


def split_clusters(config):
    """(head, [cluster blocks]) — each block starts at its `    - name:` line (with its comments)."""
    head, sep, body = config.partition("\n  clusters:\n")
    if not sep:
        fail("no clusters: section")
    blocks, current = [], []
    for line in body.splitlines(keepends=True):
        if line.startswith("    - name: ") and any(not l.lstrip().startswith("#") and l.strip() for l in current):
            # Comments directly above a cluster belong to it.
            tail = []
            while current and current[-1].lstrip().startswith("#"):
                tail.insert(0, current.pop())
            blocks.append("".join(current))
            current = tail
        current.append(line)
    blocks.append("".join(current))
    return head + sep, blocks


def cluster_name(block):
    m = re.search(r"^    - name: (\S+)$", block, re.M)
    return m.group(1) if m else None


def compose(config):
    # Listener and admin listen on every interface of the container.
    config = config.replace("      address: 127.0.0.1\n      port_value: 9901", "      address: 0.0.0.0\n      port_value: 9901")
    config = config.replace("          address: 127.0.0.1\n          port_value: 10000", "          address: 0.0.0.0\n          port_value: 10000")
    head, blocks = split_clusters(config)
    out = []
    for block in blocks:
        def host(m):
            port = int(m.group(2))
            if port not in COMPOSE_HOSTS:
                fail(f"no compose service for port {port} in cluster {cluster_name(block)}")
            return f"{m.group(1)}address: {COMPOSE_HOSTS[port]}\n{m.group(1)}port_value: {port}"
        new = re.sub(r"^( +)address: 127\.0\.0\.1\n +port_value: (\d+)$", host, block, flags=re.M)
        if new != block:
            new = new.replace("      type: STATIC\n", "      type: STRICT_DNS\n", 1)
        out.append(new)
    return head + "".join(out)


# Where the system CA bundle lives: Debian/Ubuntu (and the official Envoy image), Fedora/RHEL, Alpine/macOS.
CA_FILES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]


def provider(config, url, key, ca_file):
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        fail(f"--provider must be an http(s) URL, got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        fail(f"--provider takes a scheme and host only (the API paths are the client's), got {url!r}")
    host = parts.hostname
    if parts.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        fail("--provider over plain http would send the API key in clear text; use https")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    tls = ""
    if parts.scheme == "https":
        ca = ca_file or next((f for f in CA_FILES if os.path.exists(f)), None)
        if not ca:
            fail(f"no CA bundle found in {CA_FILES}; pass --ca-file")
        # The certificate must name the provider: without a SAN match Envoy would accept any
        # publicly trusted certificate, and hand the key to whoever presents one.
        tls = f"""      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: {host}
          common_tls_context:
            validation_context:
              trusted_ca:
                filename: {ca}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher:
                    exact: {host}
"""
    head, blocks = split_clusters(config)
    out = []
    for block in blocks:
        name = cluster_name(block)
        if name in LLM_CLUSTERS:
            block = f"""    # {name}: the real provider ({host}), from --provider.
    - name: {name}
      type: LOGICAL_DNS
      dns_lookup_family: V4_PREFERRED
      connect_timeout: 5s
      load_assignment:
        cluster_name: {name}
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {host}
                      port_value: {port}
{tls}
"""
        out.append(block)
    config = head + "".join(out)
    # Every route to an LLM cluster sends the provider's Host.
    config, n = re.subn(r"^( +)cluster: (llm_\w+)\n", lambda m: f"{m.group(0)}{m.group(1)}host_rewrite_literal: {host}\n", config, flags=re.M)
    if n == 0:
        fail("no route to an LLM cluster")
    vhost = '                      domains: ["*"]\n'
    if vhost not in config:
        fail("no catch-all virtual host")
    key_json = key.replace("\\", "\\\\").replace('"', '\\"')
    return config.replace(vhost, vhost + f"""                      # The provider's key replaces the client's (already verified) token, and
                      # the gateway's identity headers stay inside.
                      request_headers_to_add:
                        - header: {{key: authorization, value: "Bearer {key_json}"}}
                          append_action: OVERWRITE_IF_EXISTS_OR_ADD
                      request_headers_to_remove: ["x-tollgate-subject", "x-tollgate-tenant"]
""", 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="file to write")
    ap.add_argument("--filters", default=",".join(CHAIN), help="comma-separated snippets, in chain order (default: all six)")
    ap.add_argument("--wasm-root", help="directory the snippets' target/... wasm paths are relative to (default: Envoy's working directory)")
    ap.add_argument("--port", action="append", default=[], metavar="DEFAULT=PORT", help="replace a default port (repeatable)")
    ap.add_argument("--compose", action="store_true", help="docker-compose: listen on 0.0.0.0, clusters by service name")
    ap.add_argument("--provider", metavar="URL", help="send LLM traffic to this provider instead of the mock")
    ap.add_argument("--provider-key-env", default="OPENAI_API_KEY", help="environment variable with the provider's API key")
    ap.add_argument("--ca-file", help=f"CA bundle for the provider's TLS (default: the first of {CA_FILES} that exists)")
    a = ap.parse_args()

    config = (ROOT / "envoy" / "envoy.yaml").read_text(encoding="utf-8")
    filters = [f for f in a.filters.split(",") if f]
    unknown = [f for f in filters if f not in CHAIN]
    if unknown:
        fail(f"unknown filters {unknown}; known: {CHAIN}")
    config = insert_filters(config, sorted(filters, key=CHAIN.index))
    if a.wasm_root:
        config = config.replace("filename: target/", f"filename: {a.wasm_root.rstrip('/')}/target/")
    ports = {}
    for p in a.port:
        old, _, new = p.partition("=")
        if not (old.isdigit() and new.isdigit()):
            fail(f"--port wants DEFAULT=PORT, got {p!r}")
        if not re.search(rf"^ +port_value: {old}$", config, re.M):
            fail(f"no port {old} in envoy/envoy.yaml")
        ports[old] = new
    # One pass, so a new port that equals another default is not moved again.
    config = re.sub(r"^( +port_value: )(\d+)$", lambda m: m.group(1) + ports.get(m.group(2), m.group(2)), config, flags=re.M)
    if a.compose:
        config = compose(config)
    if a.provider:
        key = os.environ.get(a.provider_key_env, "")
        if not key:
            fail(f"--provider needs the API key in ${a.provider_key_env}")
        config = provider(config, a.provider, key, a.ca_file)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = " --compose" if a.compose else ""
    header = f"# Generated by scripts/chain-config.py{mode}: edit envoy/envoy.yaml and envoy/filters/, not this file.\n"
    if a.provider:
        header = "# Generated with a provider key: do not commit or share.\n"
        out.touch(mode=0o600)
        os.chmod(out, 0o600)
    out.write_text(header + config, encoding="utf-8")


if __name__ == "__main__":
    main()
