"""Stand-in for the original TKE add-on's controller (standard library only; see harness.original).

* serves the validating webhook on :9443 with the mounted certificate and allows every review;
* every second, for each ImagePullSecret with an inline password, creates a missing
  `tcr.ips<name>` Secret in every namespace and adds it to every ServiceAccount there (a strategic
  merge patch: the other entries stay). It never updates or deletes anything.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
API = f"https://{os.environ.get('KUBERNETES_SERVICE_HOST', 'kubernetes.default.svc')}:" \
      f"{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
STOP = threading.Event()


class Review(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        uid = (body.get("request") or {}).get("uid", "")
        answer = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "response": {"uid": uid, "allowed": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve() -> None:
    server = http.server.ThreadingHTTPServer(("", 9443), Review)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(f"{CERT_DIR}/tls.crt", f"{CERT_DIR}/tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def call(method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
    with open(f"{ACCOUNT}/token") as handle:
        token = handle.read().strip()
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(API + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type, "Accept": "application/json"})
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def dockerconfigjson(docker: dict[str, str]) -> str:
    user, password, server = docker.get("username", ""), docker.get("password", ""), docker["server"]
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    doc = {"auths": {server: {"username": user, "password": password, "auth": auth}}}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def reconcile(known: set[tuple[str, str]]) -> None:
    items = call("GET", "/apis/tcr.tencentcloudcr.com/v1/imagepullsecrets").get("items") or []
    wanted = {f"tcr.ips{i['metadata']['name']}": i["spec"]["docker"] for i in items
              if (i.get("spec") or {}).get("docker", {}).get("password")}
    namespaces = [n["metadata"]["name"] for n in call("GET", "/api/v1/namespaces")["items"]
                  if not n["metadata"].get("deletionTimestamp")]
    for namespace in namespaces:
        for name, docker in wanted.items():
            if (namespace, name) in known:
                continue
            try:
                call("POST", f"/api/v1/namespaces/{namespace}/secrets", {
                    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {".dockerconfigjson": dockerconfigjson(docker)}})
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise
            known.add((namespace, name))
    for sa in call("GET", "/api/v1/serviceaccounts")["items"]:
        have = sa.get("imagePullSecrets") or []
        missing = [name for name in sorted(wanted) if name not in {ref.get("name") for ref in have}]
        if missing and not sa["metadata"].get("deletionTimestamp"):
            # The list is atomic (a patch replaces it whole): read, append, write back with the
            # resourceVersion read; a conflict is retried on the next pass.
            sa.update(apiVersion="v1", kind="ServiceAccount")  # a list's items come without them
            sa["imagePullSecrets"] = [*have, *({"name": name} for name in missing)]
            try:
                call("PUT", f"/api/v1/namespaces/{sa['metadata']['namespace']}/serviceaccounts/"
                     f"{sa['metadata']['name']}", sa)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    threading.Thread(target=serve, daemon=True).start()
    known: set[tuple[str, str]] = set()
    while not STOP.is_set():
        try:
            reconcile(known)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            print(f"reconcile: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        STOP.wait(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
