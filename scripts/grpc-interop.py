#!/usr/bin/python3
"""gRPC through the gateway with Python's grpcio (gRPC C-core) as client and
server: the stack issue 16's report was made with (0 of 5 calls passed then),
and a different HTTP/2 and HPACK implementation from the tonic/h2 pair the
cargo tests use on both sides.

Two grpcio servers, one h2c and one h2 over TLS, behind one gateway with a
cleartext and a TLS listener; every call kind goes through each listener to
each server (four paths), then the gateway's own answers and its gRPC health
probes against a grpcio health service. Prints one line a
check and `N passed, N failed`; exits 1 when any failed.

    /usr/bin/python3 scripts/grpc-interop.py target/debug/switchyard

Needs Debian's python3-grpcio (the interpreter is Debian's own, which that
package installs into) and openssl. Everything on 127.0.0.1, stopped at the end.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent import futures

try:
    import grpc
except ImportError:
    sys.exit("grpc-interop: grpcio missing: apt-get install -y python3-grpcio")

MIB = 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", 8 * MIB),
    ("grpc.max_send_message_length", 8 * MIB),
]
TRAILING = (("why", "missing"), ("why-bin", b"\x00\x01\xff"))


def handler(name):
    """The `interop.<Name>` service: every reply names the server."""
    tag = name.lower().encode() + b":"

    def unary(request, context):
        return tag + request

    def server_stream(request, context):
        for i in range(int(request)):
            yield tag + str(i).encode()

    def client_stream(requests, context):
        return tag + b"".join(requests)

    def bidi(requests, context):
        for request in requests:
            yield tag + request

    def fail(request, context):
        context.set_trailing_metadata(TRAILING)
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: é")

    def slow(request, context):
        time.sleep(3)
        return tag

    same = dict(request_deserializer=None, response_serializer=None)
    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **same),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **same),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **same),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **same),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **same),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, **same),
    }
    return grpc.method_handlers_generic_handler(f"interop.{name}", methods)


class Health:
    """`grpc.health.v1.Health/Check`, answering what `serving` says. The
    messages are two protobuf bytes: field 1 (status), SERVING = 1,
    NOT_SERVING = 2."""

    def __init__(self):
        self.serving = True
        self.checks = 0

    def handler(self):
        def check(request, context):
            self.checks += 1
            return b"\x08\x01" if self.serving else b"\x08\x02"
        method = grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=None, response_serializer=None)
        return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": method})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(work):
    """A CA, and a certificate for `interop.test` it signed (webpki takes no
    self-signed end certificate); gives the key, the certificate and the
    CA's certificate."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=work)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=interop test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", *ec, "-subj", "/CN=interop.test", "-keyout", "key.pem", "-out", "cert.csr")
    with open(os.path.join(work, "cert.ext"), "w") as f:
        f.write("subjectAltName=DNS:interop.test\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "cert.ext", "-out", "cert.pem")
    return tuple(os.path.join(work, f) for f in ("key.pem", "cert.pem", "ca.pem"))


def start_servers(key, cert, health):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    server.add_generic_rpc_handlers((handler("Plain"), handler("Secure"), health.handler()))
    plain = server.add_insecure_port("127.0.0.1:0")
    with open(key, "rb") as k, open(cert, "rb") as c:
        credentials = grpc.ssl_server_credentials(((k.read(), c.read()),))
    secure = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, plain, secure


def gateway_config(work, key, cert, ca, ports, plain, secure):
    path = os.path.join(work, "switchyard.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 1
access_log: false
listeners:
  - name: http
    bind: "127.0.0.1:{ports['http']}"
  - name: https
    bind: "127.0.0.1:{ports['https']}"
    tls:
      certs: [ {{ cert: "{cert}", key: "{key}" }} ]
admin:
  bind: "127.0.0.1:{ports['admin']}"
shutdown: {{ drain_delay: 0s, timeout: 2s }}
routes:
  - {{ name: plain, match: {{ path_prefix: /interop.Plain }}, backend: plain }}
  - {{ name: secure, match: {{ path_prefix: /interop.Secure }}, backend: secure }}
backends:
  plain:
    versions:
      v1: {{ endpoints: ["127.0.0.1:{plain}"], protocol: h2 }}
    health_check: {{ grpc: {{ service: "" }}, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2 }}
  secure:
    versions:
      v1: {{ endpoints: ["127.0.0.1:{secure}"], protocol: h2, tls: {{ ca_file: "{ca}", server_name: interop.test }} }}
""")
    return path


def wait_ready(admin, gateway):
    deadline = time.time() + 15
    while time.time() < deadline:
        if gateway.poll() is not None:
            sys.exit(f"grpc-interop: the gateway exited with {gateway.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("grpc-interop: the gateway did not become ready in 15 s")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, what, call):
        try:
            problem = call()
        except grpc.RpcError as e:
            problem = f"{e.code()}: {e.details()}"
        except Exception as e:  # a broken check is a failed one
            problem = repr(e)
        if problem:
            self.failed += 1
            print(f"FAIL {what}: {problem}")
        else:
            self.passed += 1
            print(f"ok   {what}")


def status_of(call):
    """The status `call` ends with: OK when it returns."""
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def expect(got, wanted):
    return None if got == wanted else f"got {got!r}, wanted {wanted!r}"


def endpoint_healthy(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2) as r:
        status = json.load(r)
    return status["backends"]["plain"]["versions"]["v1"]["endpoints"][0]["healthy"]


def poll(condition, seconds=5):
    deadline = time.time() + seconds
    while True:
        if condition():
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.05)


def health_probes(checks, health, admin, channel):
    def out_and_back():
        if not poll(lambda: health.checks > 0 and endpoint_healthy(admin)):
            return f"not healthy while SERVING ({health.checks} probes)"
        health.serving = False
        if not poll(lambda: not endpoint_healthy(admin)):
            return "NOT_SERVING did not take the endpoint out"
        unary = channel.unary_unary("/interop.Plain/Unary")
        out = expect(status_of(lambda: unary(b"", timeout=10)), grpc.StatusCode.UNAVAILABLE)
        if out:
            return f"with the endpoint out: {out}"
        health.serving = True
        if not poll(lambda: endpoint_healthy(admin)):
            return "SERVING did not bring the endpoint back"
        return None
    checks.check("health probes: SERVING in, NOT_SERVING out (UNAVAILABLE), back in", out_and_back)


def every_call_kind(checks, channel, path, service):
    tag = service.lower().encode() + b":"

    def method(kind, name):
        return getattr(channel, kind)(f"/interop.{service}/{name}")

    checks.check(f"{path} unary", lambda: expect(
        method("unary_unary", "Unary")(b"hi", timeout=10), tag + b"hi"))
    checks.check(f"{path} server streaming", lambda: expect(
        list(method("unary_stream", "ServerStream")(b"3", timeout=10)),
        [tag + b"0", tag + b"1", tag + b"2"]))
    checks.check(f"{path} client streaming", lambda: expect(
        method("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=10),
        tag + b"abc"))
    checks.check(f"{path} bidirectional streaming", lambda: expect(
        list(method("stream_stream", "Bidi")(iter([b"x", b"y"]), timeout=10)),
        [tag + b"x", tag + b"y"]))

    def failing():
        try:
            method("unary_unary", "Fail")(b"", timeout=10)
        except grpc.RpcError as e:
            got = (e.code(), e.details(), tuple(
                (m.key, m.value) for m in e.trailing_metadata() if m.key.startswith("why")))
            return expect(got, (grpc.StatusCode.NOT_FOUND, "no such thing: é", TRAILING))
        return "the call succeeded"
    checks.check(f"{path} NOT_FOUND with trailing metadata", failing)

    def concurrent():
        calls = [method("unary_unary", "Unary").future(str(i).encode(), timeout=20)
                 for i in range(200)]
        streams = [method("stream_stream", "Bidi")(iter([b"s%d" % i] * 20), timeout=20)
                   for i in range(20)]
        answers = [call.result() for call in calls]
        echoed = [list(stream) for stream in streams]
        return (expect(answers, [tag + str(i).encode() for i in range(200)])
                or expect(echoed, [[tag + b"s%d" % i] * 20 for i in range(20)]))
    checks.check(f"{path} 200 unary calls and 20 bidi streams at once", concurrent)

    big = os.urandom(4 * MIB)
    checks.check(f"{path} 4 MiB message both ways", lambda: expect(
        method("unary_unary", "Unary")(big, timeout=30) == tag + big, True))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="grpc-interop.")
    key, cert, ca = make_cert(work)
    health = Health()
    server, plain, secure = start_servers(key, cert, health)
    ports = {name: free_port() for name in ("http", "https", "admin")}
    config = gateway_config(work, key, cert, ca, ports, plain, secure)
    log = open(os.path.join(work, "gateway.log"), "w")
    gateway = subprocess.Popen([binary, "run", "-c", config], stdout=log, stderr=log)
    checks = Checks()
    try:
        wait_ready(ports["admin"], gateway)
        with open(ca, "rb") as c:
            root = c.read()
        channels = {
            "h2c": grpc.insecure_channel(f"127.0.0.1:{ports['http']}", options=OPTIONS),
            "h2/TLS": grpc.secure_channel(
                f"127.0.0.1:{ports['https']}", grpc.ssl_channel_credentials(root),
                options=OPTIONS + [("grpc.ssl_target_name_override", "interop.test")]),
        }
        for listener, channel in channels.items():
            for service, upstream in (("Plain", "h2c"), ("Secure", "h2/TLS")):
                every_call_kind(checks, channel, f"{listener} -> {upstream}", service)
        channel = channels["h2c"]
        slow = channel.unary_unary("/interop.Plain/Slow")
        checks.check("deadline exceeded", lambda: expect(
            status_of(lambda: slow(b"", timeout=0.5)), grpc.StatusCode.DEADLINE_EXCEEDED))
        nowhere = channel.unary_unary("/interop.Nowhere/Unary")
        checks.check("no route is UNIMPLEMENTED", lambda: expect(
            status_of(lambda: nowhere(b"", timeout=10)), grpc.StatusCode.UNIMPLEMENTED))
        health_probes(checks, health, ports["admin"], channel)
        for channel in channels.values():
            channel.close()
    finally:
        gateway.terminate()
        try:
            gateway.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gateway.kill()
        server.stop(0)
        log.close()
    print(f"grpc-interop: {checks.passed} passed, {checks.failed} failed")
    if checks.failed:
        print(f"grpc-interop: the gateway's log is {work}/gateway.log")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
