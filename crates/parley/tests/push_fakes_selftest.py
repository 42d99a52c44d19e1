#!/usr/bin/env python3
"""Self-test of push_fakes.py: starts it and drives every path with client code written here
from the standards, not with the libraries the fakes check with, so that the two sides are
independent: RFC 8291 encryption with a hand-written HKDF, JWTs assembled and signed by hand
with cryptography's raw primitives, APNs over HTTP/2 + TLS with the h2 library and the fake's
CA. The encryption is itself pinned to RFC 8291's Appendix A test vector.

Run:  target/pyenv/bin/python crates/parley/tests/push_fakes_selftest.py
Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
"""

import base64
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import h2.config
import h2.connection
import h2.events
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
FAKES = os.path.join(HERE, "push_fakes.py")

# RFC 8291, Appendix A.
RFC8291 = {
    "plaintext": b"When I grow up, I want to be a watermelon",
    "as_private": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "ua_public": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpk"
                 "NtoIAiw4",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "salt": "DGv6ra1nlYgDCS1FRnbzlw",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLo"
            "cInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBW"
            "LVWGNWQexSgSxsj_Qulcy4a-fN",
}


# ---------------------------------------------------------------------------------------------
# Encodings and crypto, by hand


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(public_key):
    return public_key.public_bytes(serialization.Encoding.X962,
                                   serialization.PublicFormat.UncompressedPoint)


def p256_from_scalar(text):
    return ec.derive_private_key(int.from_bytes(unb64u(text), "big"), ec.SECP256R1())


def hkdf(salt, ikm, info, length):
    """RFC 5869 with SHA-256, for lengths up to one block (all RFC 8291 needs)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def webpush_encrypt(plaintext, ua_public, auth, as_private=None, salt=None, rs=4096):
    """RFC 8291 section 3 and RFC 8188: one aes128gcm record, keyid = the sender's key."""
    as_private = as_private or ec.generate_private_key(ec.SECP256R1())
    salt = salt or os.urandom(16)
    as_public = point(as_private.public_key())
    ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    shared = as_private.exchange(ec.ECDH(), ua_key)
    ikm = hkdf(auth, shared, b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    record = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: last record
    return salt + rs.to_bytes(4, "big") + bytes([len(as_public)]) + as_public + record


def jwt_encode(header, claims, sign):
    signing_input = f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64u(sign(signing_input.encode()))}"


def es256(private_key, claims, **header):
    """JWS ES256 (RFC 7518 3.4): the signature is r || s, 32 bytes each, not DER."""
    def sign(data):
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return jwt_encode({"alg": "ES256", "typ": "JWT", **header}, claims, sign)


def rs256(private_key, claims, **header):
    def sign(data):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return jwt_encode({"alg": "RS256", "typ": "JWT", **header}, claims, sign)


# ---------------------------------------------------------------------------------------------
# HTTP clients


def http(method, url, body=None, headers=None):
    """HTTP/1.1 request; returns (status, lower-case headers, body bytes) for any status."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class H2Client:
    """A minimal HTTP/2 client over TLS (ALPN h2), trusting only the fake's CA."""

    def __init__(self, port, ca, server_hostname="localhost", alpn=("h2",)):
        context = ssl.create_default_context(cafile=ca)
        context.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=server_hostname)
        self.alpn = self.sock.selected_alpn_protocol()
        self.authority = f"{server_hostname}:{port}"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(self, method, path, headers, body=b""):
        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [
            (":method", method), (":scheme", "https"),
            (":authority", self.authority), (":path", path),
            *[(k.lower(), v) for k, v in headers.items()],
            ("content-length", str(len(body))),
        ])
        self.conn.send_data(stream, body, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        return self._read_response(stream)

    def _read_response(self, stream):
        status, resp_headers, data = None, {}, bytearray()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before the response ended")
            for event in self.conn.receive_data(chunk):
                if getattr(event, "stream_id", None) != stream:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    resp_headers = {k.decode(): v.decode() for k, v in event.headers}
                    status = int(resp_headers.pop(":status"))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset: {event.error_code}")
                elif isinstance(event, h2.events.StreamEnded):
                    self.sock.sendall(self.conn.data_to_send())
                    return status, resp_headers, bytes(data)
            self.sock.sendall(self.conn.data_to_send())

    def close(self):
        self.conn.close_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# The fake under test


def start_fakes(directory):
    """Starts push_fakes.py and reads its JSON line (within 30 s)."""
    proc = subprocess.Popen([sys.executable, FAKES, "--dir", directory],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        raise RuntimeError("push_fakes.py printed nothing in 30 s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"push_fakes.py exited ({proc.wait()}) before announcing")
    return proc, json.loads(line)


class Fakes:
    def __init__(self, info):
        self.info = info
        self.control = f"http://127.0.0.1:{info['control']}"
        self.apns_key = self._load_key(info["apns_key"])
        with open(info["fcm_service_account"]) as f:
            self.account = json.load(f)
        self.fcm_key = serialization.load_pem_private_key(
            self.account["private_key"].encode(), None)

    @staticmethod
    def _load_key(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), None)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        status, _, resp = http(method, self.control + path, data,
                               {"content-type": "application/json"})
        assert status == 200, f"control {method} {path}: {status} {resp!r}"
        return json.loads(resp)

    def log(self, n=0, timeout_ms=5000, **params):
        query = urllib.parse.urlencode({"n": n, "timeout_ms": timeout_ms, **params})
        return self.call("GET", f"/log?{query}")["records"]

    def last(self, provider):
        records = [r for r in self.log(1, provider=provider) if r["provider"] == provider]
        assert records, f"no {provider} record"
        return records[-1]

    # --- Web Push

    def vapid(self, key, aud=None, exp=None, sub="mailto:ops@example.com"):
        claims = {"aud": aud or f"http://127.0.0.1:{self.info['webpush']}",
                  "exp": exp or int(time.time()) + 12 * 3600, "sub": sub}
        return f"vapid t={es256(key, claims)}, k={b64u(point(key.public_key()))}"

    def webpush(self, sub, payload, authorization=None, headers=None, body=None):
        vapid_key = ec.generate_private_key(ec.SECP256R1())
        if body is None:
            body = webpush_encrypt(json.dumps(payload).encode(), unb64u(sub["keys"]["p256dh"]),
                                   unb64u(sub["keys"]["auth"]))
        all_headers = {"content-encoding": "aes128gcm", "ttl": "60",
                       "content-type": "application/octet-stream",
                       "authorization": authorization or self.vapid(vapid_key)}
        all_headers.update(headers or {})
        all_headers = {k: v for k, v in all_headers.items() if v is not None}
        return http("POST", sub["endpoint"], body, all_headers)

    # --- APNs

    def apns_jwt(self, key=None, kid="ABC123DEFG", iss="TEAM123456", iat=None):
        claims = {"iss": iss, "iat": iat if iat is not None else int(time.time())}
        return es256(key or self.apns_key, claims, kid=kid)

    def apns_client(self, **kw):
        return H2Client(self.info["apns"], self.info["apns_ca"], **kw)

    @staticmethod
    def apns_headers(token, push_type="alert", priority="10", **extra):
        headers = {"authorization": f"bearer {token}", "apns-topic": "com.example.parley",
                   "apns-push-type": push_type, "apns-priority": priority}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return {k: v for k, v in headers.items() if v is not None}

    # --- FCM

    def grant(self, **override):
        now = int(time.time())
        claims = {"iss": self.account["client_email"],
                  "scope": "https://www.googleapis.com/auth/firebase.messaging",
                  "aud": self.account["token_uri"], "iat": now, "exp": now + 3600}
        claims.update(override.pop("claims", {}))
        key = override.pop("key", self.fcm_key)
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": rs256(key, claims, kid=self.account["private_key_id"])}
        form.update(override)
        return http("POST", self.account["token_uri"], urllib.parse.urlencode(form).encode(),
                    {"content-type": "application/x-www-form-urlencoded"})

    def access_token(self):
        status, _, body = self.grant()
        assert status == 200, (status, body)
        return json.loads(body)["access_token"]

    def fcm_send(self, message, access_token):
        url = (f"http://127.0.0.1:{self.info['fcm']}/v1/projects/"
               f"{self.info['fcm_project']}/messages:send")
        headers = {"content-type": "application/json"}
        if access_token:
            headers["authorization"] = f"Bearer {access_token}"
        return http("POST", url, json.dumps({"message": message}).encode(), headers)


# ---------------------------------------------------------------------------------------------
# Checks: each takes the Fakes, runs after a /reset, and raises on failure


def expect_error(record, fragment):
    assert any(fragment in e for e in record["errors"]), \
        f"expected an error containing {fragment!r}, got {record['errors']}"


def check_startup_files(f):
    info = f.info
    assert set(info) == {"webpush", "apns", "fcm", "control", "apns_ca", "apns_key",
                         "apns_key_id", "apns_team_id", "apns_topic", "fcm_service_account",
                         "fcm_project"}, sorted(info)
    assert (info["apns_key_id"], info["apns_team_id"], info["apns_topic"], info["fcm_project"]) \
        == ("ABC123DEFG", "TEAM123456", "com.example.parley", "parley-test")
    with open(info["apns_key"]) as k:
        assert k.read().startswith("-----BEGIN PRIVATE KEY-----"), "p8 is PKCS#8 PEM"
    assert isinstance(f.apns_key, ec.EllipticCurvePrivateKey)
    assert f.apns_key.curve.name == "secp256r1"
    account = f.account
    assert account["type"] == "service_account" and account["project_id"] == "parley-test"
    assert account["client_email"] == "parley@parley-test.iam.gserviceaccount.com"
    assert account["token_uri"] == f"http://127.0.0.1:{info['fcm']}/token"
    assert account["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert isinstance(f.fcm_key, rsa.RSAPrivateKey) and f.fcm_key.key_size == 2048
    assert len(account["private_key_id"]) == 40 and account["client_id"].isdigit()
    for field in ("auth_uri", "auth_provider_x509_cert_url", "client_x509_cert_url"):
        assert account[field].startswith("https://"), field
    with open(info["apns_ca"], "rb") as c:
        ca = x509.load_pem_x509_certificate(c.read())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def check_webpush_delivers(f):
    sub = f.call("POST", "/subscribe")
    assert sub["endpoint"] == f"http://127.0.0.1:{f.info['webpush']}/push/{sub['id']}"
    assert len(unb64u(sub["keys"]["p256dh"])) == 65 and len(unb64u(sub["keys"]["auth"])) == 16
    key = ec.generate_private_key(ec.SECP256R1())
    status, headers, _ = f.webpush(sub, {"seq": 7, "kind": "message"},
                                   authorization=f.vapid(key),
                                   headers={"urgency": "high", "topic": "conv-42"})
    assert status == 201, status
    assert headers["location"].startswith(f"http://127.0.0.1:{f.info['webpush']}/message/")
    rec = f.last("webpush")
    assert rec["ok"], rec["errors"]
    assert rec["payload"] == {"seq": 7, "kind": "message"}, rec["payload"]
    assert rec["target"] == sub["id"] and rec["status"] == 201 and rec["method"] == "POST"
    assert rec["vapid_key"] == b64u(point(key.public_key()))
    assert rec["jwt"]["claims"]["aud"] == f"http://127.0.0.1:{f.info['webpush']}"
    assert rec["headers"]["urgency"] == "high" and rec["raw_body"] is None


def check_webpush_rfc8291_vector(f):
    # Our encryptor reproduces the RFC's body byte for byte...
    body = webpush_encrypt(RFC8291["plaintext"], unb64u(RFC8291["ua_public"]),
                           unb64u(RFC8291["auth"]), p256_from_scalar(RFC8291["as_private"]),
                           unb64u(RFC8291["salt"]))
    assert b64u(body) == RFC8291["body"], "hand-written RFC 8291 encryption is off"
    # ...and the fake, given the RFC's receiver keys, decrypts the RFC's body.
    sub = f.call("POST", "/subscribe", {"private_key": RFC8291["ua_private"],
                                        "auth": RFC8291["auth"]})
    assert sub["keys"]["p256dh"] == RFC8291["ua_public"], sub["keys"]
    status, _, _ = f.webpush(sub, None, body=unb64u(RFC8291["body"]))
    assert status == 201, status
    rec = f.last("webpush")
    assert rec["plaintext"] == RFC8291["plaintext"].decode(), rec
    assert rec["errors"] == ["decrypted payload is not JSON"], rec["errors"]


def check_webpush_auth_failures(f):
    sub = f.call("POST", "/subscribe")
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    k = b64u(point(key.public_key()))
    now = int(time.time())
    port = f.info["webpush"]
    forged = f.vapid(other).split(", k=")[0] + f", k={k}"
    cases = [
        ("no header", None, 401, "Authorization header missing"),
        ("legacy scheme", f"WebPush {es256(key, {})}", 401, "expected vapid"),
        ("signed by another key", forged, 403, "JWT rejected"),
        ("wrong aud", f.vapid(key, aud=f"http://localhost:{port}"), 403, "aud"),
        ("expired", f.vapid(key, exp=now - 10), 403, "not in the future"),
        ("exp beyond 24 h", f.vapid(key, exp=now + 25 * 3600), 403, "24 h"),
        ("sub not a contact", f.vapid(key, sub="parley"), 403, "sub"),
    ]
    for name, authorization, want, fragment in cases:
        headers = {"authorization": None} if authorization is None else None
        status, resp_headers, _ = f.webpush(sub, {"x": 1}, authorization=authorization,
                                            headers=headers)
        assert status == want, f"{name}: {status}"
        if want == 401:
            assert resp_headers.get("www-authenticate") == "vapid", name
        rec = f.last("webpush")
        assert not rec["ok"], name
        expect_error(rec, fragment)
    # Parameters in either order and loose spacing are fine.
    t = f.vapid(key).split("t=")[1].split(",")[0]
    status, _, _ = f.webpush(sub, {"x": 1}, authorization=f"vapid   k={k} ,t={t}")
    assert status == 201 and f.last("webpush")["ok"], status
    # A subscription made for one application server key refuses another's.
    restricted = f.call("POST", "/subscribe", {"vapid_key": b64u(point(other.public_key()))})
    status, _, _ = f.webpush(restricted, {"x": 1}, authorization=f.vapid(key))
    assert status == 403, status
    expect_error(f.last("webpush"), "differs from the key")


def check_webpush_header_checks(f):
    sub = f.call("POST", "/subscribe")
    cases = [
        ({"ttl": None}, "TTL header missing"),
        ({"ttl": "-5"}, "not a non-negative integer"),
        ({"urgency": "urgent"}, "Urgency"),
        ({"topic": "x" * 33}, "Topic"),
        ({"topic": "a+b"}, "Topic"),
        ({"content-encoding": "aesgcm"}, "Content-Encoding"),
    ]
    for headers, fragment in cases:
        status, _, _ = f.webpush(sub, {"x": 1}, headers=headers)
        assert status == 201, (headers, status)  # answered normally, but flagged
        rec = f.last("webpush")
        assert not rec["ok"] and rec["payload"] == {"x": 1}, (headers, rec)
        expect_error(rec, fragment)


def check_webpush_bad_bodies(f):
    sub = f.call("POST", "/subscribe")
    ua, auth = unb64u(sub["keys"]["p256dh"]), unb64u(sub["keys"]["auth"])
    body = bytearray(webpush_encrypt(b'{"seq": 1}', ua, auth))
    body[-20] ^= 1
    status, _, _ = f.webpush(sub, None, body=bytes(body))
    assert status == 201, status
    expect_error(f.last("webpush"), "decryption failed")
    # A record size smaller than the record: not the single record RFC 8291 requires.
    status, _, _ = f.webpush(sub, None, body=webpush_encrypt(b'{"seq": 1}', ua, auth, rs=20))
    expect_error(f.last("webpush"), "single record")
    # Encrypted for another subscription's keys.
    other = f.call("POST", "/subscribe")
    f.webpush(sub, None, body=webpush_encrypt(b"{}", unb64u(other["keys"]["p256dh"]), auth))
    expect_error(f.last("webpush"), "decryption failed")


def check_webpush_unknown_subscription(f):
    sub = f.call("POST", "/subscribe")
    gone = dict(sub, endpoint=sub["endpoint"].rsplit("/", 1)[0] + "/nosuchsub")
    status, _, _ = f.webpush(gone, None, body=b"\x00" * 100)
    assert status == 404, status
    rec = f.last("webpush")
    assert rec["target"] == "nosuchsub" and rec["status"] == 404
    expect_error(rec, "unknown subscription")


def check_webpush_scripted(f):
    sub = f.call("POST", "/subscribe")
    f.call("POST", "/script", {"target": sub["id"], "responses": [
        {"status": 410}, {"status": 429, "headers": {"retry-after": "1"}, "body": "slow down"}]})
    answers = [f.webpush(sub, {"n": n}) for n in range(3)]
    assert [a[0] for a in answers] == [410, 429, 201], [a[0] for a in answers]
    assert answers[1][1]["retry-after"] == "1" and answers[1][2] == b"slow down"
    records = f.log(3)
    assert [r["status"] for r in records] == [410, 429, 201]
    assert all(r["ok"] for r in records), [r["errors"] for r in records]


def check_apns_delivers(f):
    client = f.apns_client()
    assert client.alpn == "h2", client.alpn
    token = f.apns_jwt()
    alert = {"aps": {"alert": {"title": "Ann", "body": "hi"}, "sound": "default"}, "seq": 3}
    status, headers, body = client.request(
        "POST", "/3/device/" + "ab" * 32, f.apns_headers(token, apns_collapse_id="c1"),
        json.dumps(alert).encode())
    assert status == 200 and body == b"", (status, body)
    assert len(headers["apns-id"]) == 36, headers
    apns_id = "123E4567-E89B-12D3-A456-426614174000"
    background = {"aps": {"content-available": 1}, "seq": 4}
    status, headers, _ = client.request(
        "POST", "/3/device/" + "cd" * 32,
        f.apns_headers(token, "background", "5", apns_id=apns_id, apns_expiration="0"),
        json.dumps(background).encode())
    assert status == 200 and headers["apns-id"] == apns_id, (status, headers)
    client.close()
    records = f.log(2, provider="apns")
    assert [r["ok"] for r in records] == [True, True], [r["errors"] for r in records]
    assert records[0]["payload"] == alert and records[1]["payload"] == background
    assert records[0]["target"] == "ab" * 32 and records[0]["raw_body"] == json.dumps(alert)
    assert records[0]["jwt"]["header"]["kid"] == "ABC123DEFG"
    assert records[0]["jwt"]["claims"]["iss"] == "TEAM123456"
    assert f.call("GET", "/stats")["apns_jwts"] == 1


def check_apns_tls_identity(f):
    # The certificate names 127.0.0.1 too, for clients that connect by address.
    client = f.apns_client(server_hostname="127.0.0.1")
    status, _, _ = client.request("POST", "/3/device/" + "ab" * 32, f.apns_headers(f.apns_jwt()),
                                  b'{"aps": {"alert": "x"}}')
    assert status == 200 and client.alpn == "h2"
    client.close()
    # A client that does not trust the CA fails the handshake.
    try:
        ssl.create_default_context().wrap_socket(
            socket.create_connection(("127.0.0.1", f.info["apns"])), server_hostname="localhost")
    except ssl.SSLCertVerificationError:
        pass
    else:
        raise AssertionError("handshake succeeded without the fake's CA")
    # A client that will not speak HTTP/2 is flagged (Apple would not serve it).
    context = ssl.create_default_context(cafile=f.info["apns_ca"])
    context.set_alpn_protocols(["http/1.1"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", f.info["apns"])),
                             server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() is None
        s.sendall(b"POST /3/device/ab HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        while s.recv(65536):
            pass
    expect_error(f.last("apns"), "HTTP/2 only")


def check_apns_auth_failures(f):
    other = ec.generate_private_key(ec.SECP256R1())
    cases = [
        ("another key", f.apns_jwt(key=other), "InvalidProviderToken"),
        ("wrong kid", f.apns_jwt(kid="XXXXXXXXXX"), "InvalidProviderToken"),
        ("wrong team", f.apns_jwt(iss="OTHERTEAM1"), "InvalidProviderToken"),
        ("iat in the future", f.apns_jwt(iat=int(time.time()) + 600), "InvalidProviderToken"),
        ("iat over an hour old", f.apns_jwt(iat=int(time.time()) - 3700), "ExpiredProviderToken"),
        ("no token", None, "MissingProviderToken"),
    ]
    client = f.apns_client()
    for name, token, reason in cases:
        headers = f.apns_headers(token or "x")
        if token is None:
            del headers["authorization"]
        status, resp_headers, body = client.request(
            "POST", "/3/device/" + "ab" * 32, headers, b'{"aps": {"alert": "x"}}')
        assert status == 403, (name, status)
        assert json.loads(body) == {"reason": reason}, (name, body)
        assert "apns-id" in resp_headers, name
        assert not f.last("apns")["ok"], name
    client.close()


def check_apns_header_checks(f):
    token = f.apns_jwt()
    alert = b'{"aps": {"alert": "x"}}'
    cases = [
        (f.apns_headers(token, "background", "10"), b'{"aps": {"content-available": 1}}',
         "Apple requires 5"),
        (f.apns_headers(token, apns_topic="com.example.other"), alert, "apns-topic"),
        (f.apns_headers(token, "voip"), alert, "apns-push-type"),
        (f.apns_headers(token, priority="7"), alert, "apns-priority"),
        (f.apns_headers(token, apns_collapse_id="x" * 65), alert, "apns-collapse-id"),
        (f.apns_headers(token, apns_expiration="soon"), alert, "apns-expiration"),
        (f.apns_headers(token), b'{"seq": 1}', "no aps"),
        (f.apns_headers(token, "background", "5"), b'{"aps": {"alert": "x"}}',
         "content-available"),
        (f.apns_headers(token), b"not json", "not JSON"),
        (f.apns_headers(token), b'{"aps": {"alert": "' + b"x" * 4100 + b'"}}', "at most 4096"),
    ]
    client = f.apns_client()
    for headers, body, fragment in cases:
        status, _, _ = client.request("POST", "/3/device/" + "ab" * 32, headers, body)
        assert status == 200, (fragment, status)
        expect_error(f.last("apns"), fragment)
    status, _, _ = client.request("POST", "/3/device/not-hex", f.apns_headers(token), alert)
    expect_error(f.last("apns"), "not hexadecimal")
    client.close()


def check_apns_scripted(f):
    device = "ef" * 32
    f.call("POST", "/script", {"target": device, "responses": [
        {"apns_reason": "Unregistered"},
        {"status": 429, "apns_reason": "TooManyRequests", "headers": {"retry-after": "3"}},
        {"status": 500},
    ]})
    client = f.apns_client()
    token = f.apns_jwt()
    answers = [client.request("POST", f"/3/device/{device}", f.apns_headers(token),
                              b'{"aps": {"alert": "x"}}') for _ in range(4)]
    client.close()
    assert [a[0] for a in answers] == [410, 429, 500, 200], [a[0] for a in answers]
    gone = json.loads(answers[0][2])
    assert gone["reason"] == "Unregistered" and abs(gone["timestamp"] - time.time() * 1000) < 60000
    assert json.loads(answers[1][2]) == {"reason": "TooManyRequests"}
    assert answers[1][1]["retry-after"] == "3"
    assert json.loads(answers[2][2]) == {"reason": "InternalServerError"}
    assert all("apns-id" in a[1] for a in answers)


def check_fcm_delivers(f):
    status, _, body = f.grant()
    assert status == 200, (status, body)
    grant = json.loads(body)
    assert grant["expires_in"] == 3599 and grant["token_type"] == "Bearer"
    message = {"token": "reg-token-1", "data": {"seq": "5", "kind": "message", "text": "hi"},
               "android": {"priority": "high", "ttl": "60s", "collapse_key": "conv"}}
    status, _, body = f.fcm_send(message, grant["access_token"])
    assert status == 200, (status, body)
    name = json.loads(body)["name"]
    assert name.startswith("projects/parley-test/messages/"), name
    token_rec, send_rec = f.log(2)
    assert token_rec["provider"] == "fcm_token" and token_rec["ok"], token_rec["errors"]
    assert token_rec["jwt"]["claims"]["iss"] == "parley@parley-test.iam.gserviceaccount.com"
    assert send_rec["provider"] == "fcm" and send_rec["ok"], send_rec["errors"]
    assert send_rec["target"] == "reg-token-1"
    assert send_rec["payload"] == {"seq": 5, "kind": "message", "text": "hi"}, send_rec["payload"]
    assert json.loads(send_rec["raw_body"]) == {"message": message}
    assert f.call("GET", "/stats")["fcm_token_grants"] == 1


def check_fcm_grant_rejections(f):
    now = int(time.time())
    cases = [
        ("another key", {"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
         "JWT rejected"),
        ("wrong aud", {"claims": {"aud": "https://oauth2.googleapis.com/token"}}, "aud"),
        ("no scope", {"claims": {"scope": "https://www.googleapis.com/auth/cloud-platform"}},
         "scope"),
        ("too long", {"claims": {"iat": now, "exp": now + 7200}}, "at most 3600"),
        ("wrong issuer", {"claims": {"iss": "someone@example.com"}}, "iss"),
        ("wrong grant", {"grant_type": "client_credentials"}, "grant_type"),
    ]
    for name, override, fragment in cases:
        status, _, body = f.grant(**override)
        assert status == 400 and json.loads(body)["error"] == "invalid_grant", (name, status)
        rec = f.last("fcm_token")
        assert not rec["ok"], name
        expect_error(rec, fragment)
    assert f.call("GET", "/stats")["fcm_token_grants"] == 0


def check_fcm_send_auth(f):
    for token in (None, "ya29.made-up"):
        status, _, body = f.fcm_send({"token": "t", "data": {"a": "b"}}, token)
        assert status == 401, (token, status)
        error = json.loads(body)["error"]
        assert error["code"] == 401 and error["status"] == "UNAUTHENTICATED", error
        assert not f.last("fcm")["ok"]


def check_fcm_send_checks(f):
    token = f.access_token()
    cases = [
        ({"token": "t", "data": {"seq": 5}}, "strings only"),
        ({"topic": "news", "data": {"a": "b"}}, "exactly a token"),
        ({"token": "t", "data": {"a": "b"}, "priority": "high"}, "unknown fields"),
        ({"token": "t", "android": {"priority": "urgent"}}, "android.priority"),
        ({"token": "t", "android": {"ttl": 60}}, "android.ttl"),
        ({"token": "t", "data": {"from": "x"}}, "reserved"),
        ({"token": "t", "data": {"a": "x" * 5000}}, "at most 4096"),
    ]
    for message, fragment in cases:
        status, _, _ = f.fcm_send(message, token)
        assert status == 200, (message, status)
        expect_error(f.last("fcm"), fragment)


def check_fcm_scripted(f):
    token = f.access_token()
    f.call("POST", "/script", {"target": "reg-gone", "responses": [
        {"status": 404, "fcm_error": "UNREGISTERED"},
        {"fcm_error": "QUOTA_EXCEEDED", "headers": {"retry-after": "2"}},
        {"status": 503},
    ]})
    answers = [f.fcm_send({"token": "reg-gone", "data": {"a": "b"}}, token) for _ in range(4)]
    assert [a[0] for a in answers] == [404, 429, 503, 200], [a[0] for a in answers]
    assert json.loads(answers[0][2]) == {"error": {
        "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                     "errorCode": "UNREGISTERED"}]}}, answers[0][2]
    quota = json.loads(answers[1][2])["error"]
    assert quota["status"] == "RESOURCE_EXHAUSTED" and answers[1][1]["retry-after"] == "2"
    assert quota["details"][0]["errorCode"] == "QUOTA_EXCEEDED"
    assert json.loads(answers[2][2])["error"]["details"][0]["errorCode"] == "UNAVAILABLE"


def check_log_waits(f):
    sub = f.call("POST", "/subscribe")
    later = threading.Timer(0.5, lambda: f.webpush(sub, {"late": True}))
    later.start()
    start = time.monotonic()
    records = f.log(1, timeout_ms=10000)
    waited = time.monotonic() - start
    later.join()
    assert len(records) == 1 and 0.4 < waited < 5, (len(records), waited)
    start = time.monotonic()
    records = f.log(3, timeout_ms=300)
    waited = time.monotonic() - start
    assert len(records) == 1 and 0.25 < waited < 3, (len(records), waited)
    assert f.log(0, timeout_ms=0, provider="apns") == []


def check_reset(f):
    sub = f.call("POST", "/subscribe")
    f.call("POST", "/script", {"target": sub["id"], "responses": [{"status": 410}]})
    f.access_token()
    assert f.log(1) and f.call("GET", "/stats")["fcm_token_grants"] == 1
    f.call("POST", "/reset")
    assert f.log(0, timeout_ms=0) == []
    assert f.call("GET", "/stats") == {"apns_jwts": 0, "fcm_token_grants": 0}
    status, _, _ = f.webpush(sub, {"x": 1})  # the script is gone, the subscription is not
    assert status == 201, status


def check_scripted_delay(f):
    sub = f.call("POST", "/subscribe")
    f.call("POST", "/script", {"target": sub["id"], "responses": [{"status": 201,
                                                                   "delay_ms": 400}]})
    start = time.monotonic()
    status, headers, _ = f.webpush(sub, {"x": 1})
    assert status == 201 and "location" in headers and time.monotonic() - start >= 0.4


def check_control_errors(f):
    status, _, _ = http("POST", f.control + "/script", b'{"target": "x"}')
    assert status == 400, status
    status, _, _ = http("POST", f.control + "/script",
                        b'{"target": "x", "responses": [{"headers": {}}]}')
    assert status == 400, status
    status, _, _ = http("GET", f.control + "/nope")
    assert status == 404, status


def check_exits(_f):
    """Stops when stdin closes (a dying test closes it) and on SIGTERM."""
    for how in ("stdin", "sigterm"):
        with tempfile.TemporaryDirectory() as d:
            proc, _ = start_fakes(d)
            if how == "stdin":
                proc.stdin.close()
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"still running 10 s after {how}")
            assert code == 0, f"exit code {code} after {how}"


CHECKS = [
    check_startup_files, check_webpush_delivers, check_webpush_rfc8291_vector,
    check_webpush_auth_failures, check_webpush_header_checks, check_webpush_bad_bodies,
    check_webpush_unknown_subscription, check_webpush_scripted, check_apns_delivers,
    check_apns_tls_identity, check_apns_auth_failures, check_apns_header_checks,
    check_apns_scripted, check_fcm_delivers, check_fcm_grant_rejections, check_fcm_send_auth,
    check_fcm_send_checks, check_fcm_scripted, check_log_waits, check_reset,
    check_scripted_delay, check_control_errors, check_exits,
]


def main():
    passed = failed = 0
    with tempfile.TemporaryDirectory() as directory:
        proc, info = start_fakes(directory)
        try:
            fakes = Fakes(info)
            for check in CHECKS:
                fakes.call("POST", "/reset")
                try:
                    check(fakes)
                    passed += 1
                    print(f"ok    {check.__name__}", flush=True)
                except Exception:
                    failed += 1
                    print(f"FAIL  {check.__name__}\n{traceback.format_exc()}", flush=True)
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
