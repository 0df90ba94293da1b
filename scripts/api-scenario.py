"""The jobs API scenario against the deployed shape (scripts/cloud-local).

    api-scenario.py ENDPOINT API_ID ISSUER_PORT AUDIENCE BUCKET FILE SPEC OUTDIR

Plays a JWT issuer on 127.0.0.1:ISSUER_PORT (an RSA key made here, its JWKS
served over HTTP: the stack's JwtIssuer points at it), then talks to the
emulated HTTP API as a client would: the Host header names the API, every
call but /openapi.json carries a token the issuer signed. Prints one
`api: ...` line per step and writes the job's first result part to OUTDIR;
exits 0 only if every answer was the expected one:

    401 without or with a foreign token, 200 /openapi.json, 201 POST /jobs,
    409 the same again, 425 while it runs, 200 with presigned URLs, 406 for a
    rejected input with its line, 404 for an unknown id, 200 GET /jobs.
"""

import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import botocore.session
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

endpoint, api_id, issuer_port, audience, bucket, data_file, spec_file, outdir = sys.argv[1:9]
issuer = f"http://127.0.0.1:{issuer_port}"
port = endpoint.rsplit(":", 1)[1]
host = f"{api_id}.execute-api.localhost:{port}"
failures = []


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


key, foreign = new_key(), new_key()
numbers = key.public_key().public_numbers()
jwks = {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                  "n": b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                  "e": b64(numbers.e.to_bytes(3, "big"))}]}


class Issuer(BaseHTTPRequestHandler):
    def do_GET(self):
        docs = {"/.well-known/openid-configuration": {"issuer": issuer, "jwks_uri": f"{issuer}/.well-known/jwks.json"},
                "/.well-known/jwks.json": jwks}
        body = json.dumps(docs.get(self.path, {})).encode()
        self.send_response(200 if self.path in docs else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(issuer_port)), Issuer)
threading.Thread(target=server.serve_forever, daemon=True).start()


def token(signer):
    now = int(time.time())
    head = b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": issuer, "aud": audience, "sub": "scenario", "iat": now - 5,
                             "exp": now + 3600}).encode())
    sig = signer.sign(f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{claims}.{b64(sig)}"


good = token(key)


def call(method, path, body=None, tok=good):
    req = urllib.request.Request(endpoint + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Host", host)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


started = time.time()


def expect(what, got, want, detail=""):
    print(f"api: {what} {got}" + (f" {detail}" if detail else "") + f" [{time.time() - started:.1f} s]", flush=True)
    if got != want:
        failures.append(f"{what}: {got}, expected {want}")


def wait(job_id, limit=240):
    deadline = time.time() + limit
    while True:
        status, body = call("GET", f"/jobs/{job_id}")
        if status != 425 or time.time() > deadline:
            return status, body
        time.sleep(0.5)


s3 = botocore.session.get_session().create_client("s3")
spec = json.load(open(spec_file))
stamp = time.time_ns()
good_key = f"incoming/api-{stamp}/{os.path.basename(data_file)}"
bad_key = f"incoming/api-{stamp}/bad.csv"

status, _ = call("GET", "/openapi.json", tok=None)
expect("GET /openapi.json without a token", status, 200)
status, _ = call("GET", "/jobs", tok=None)
expect("GET /jobs without a token", status, 401)
status, _ = call("GET", "/jobs", tok=token(foreign))
expect("GET /jobs with a foreign token", status, 401)

with open(data_file, "rb") as f:
    s3.put_object(Bucket=bucket, Key=good_key, Body=f.read())
status, body = call("POST", "/jobs", {"source": good_key, "spec": spec})
expect("POST /jobs", status, 201, json.dumps(body))
job_id = body.get("id") if isinstance(body, dict) else None
status, body = call("POST", "/jobs", {"source": f"s3://{bucket}/{good_key}", "spec": spec})
expect("POST /jobs again", status, 409)
if isinstance(body, dict) and body.get("id") != job_id:
    failures.append(f"409 names {body.get('id')}, not {job_id}")
status, body = call("GET", f"/jobs/{job_id}")
expect("GET /jobs/{id} while running", status, 425, json.dumps(body.get("progress") if isinstance(body, dict) else body))
status, body = wait(job_id)
expect("GET /jobs/{id} when done", status, 200)
if status == 200:
    files = body["output_files"]
    print(f"api: output files {len(files)}, manifest {body['manifest']['key']}")
    os.makedirs(outdir, exist_ok=True)
    for i, f in enumerate(files):
        with urllib.request.urlopen(f["url"], timeout=60) as r:  # presigned: no token, no Host trick
            data = r.read()
        with open(os.path.join(outdir, os.path.basename(f["key"])), "wb") as out:
            out.write(data)
        if len(data) != f["bytes"]:
            failures.append(f"{f['key']}: downloaded {len(data)} bytes, listed {f['bytes']}")

s3.put_object(Bucket=bucket, Key=bad_key, Body=b"Song,Date,Number of Plays\na,2020-01-01,1\nb,2020-01-01,patata\n")
status, body = call("POST", "/jobs", {"source": bad_key, "spec": spec})
expect("POST /jobs (bad input)", status, 201)
status, body = wait(body.get("id") if isinstance(body, dict) else "x")
line = body.get("error", {}).get("line") if isinstance(body, dict) else None
expect("GET /jobs/{id} rejected", status, 406, f"line {line}: {body.get('message') if isinstance(body, dict) else body}")
if line != 3:
    failures.append(f"the rejection names line {line}, not 3")
status, _ = call("GET", "/jobs/" + "0" * 32)
expect("GET /jobs/{unknown}", status, 404)
status, body = call("GET", "/jobs?limit=100")
listed = [j["id"] for j in body.get("jobs", [])] if isinstance(body, dict) else []
expect("GET /jobs", status, 200, f"{len(listed)} jobs")
if job_id not in listed:
    failures.append("the job is not listed")

server.shutdown()
if failures:
    print("api scenario FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("api scenario ok")
