#!/usr/bin/env python3
"""Local fakes of the three push providers Parley talks to: Web Push (RFC 8030/8291/8292),
Apple APNs (the HTTP/2 provider API) and Google FCM HTTP v1 (with its OAuth token endpoint).

Why Python: the fakes check what the Parley server sends with implementations of the
standards that owe nothing to Parley's Rust code (http_ece for RFC 8291 decryption, PyJWT and
cryptography for ES256/RS256). A fake that shared Parley's code would only agree with itself.

Run:   target/pyenv/bin/python crates/parley/tests/push_fakes.py --dir DIR
       (scripts/pyenv.sh makes target/pyenv)

On start it writes credentials into DIR, listens on four ephemeral ports of 127.0.0.1 and
prints one JSON line on stdout:

  {"webpush": port, "apns": port, "fcm": port, "control": port,
   "apns_ca": path, "apns_key": path, "apns_key_id": "ABC123DEFG",
   "apns_team_id": "TEAM123456", "apns_topic": "com.example.parley",
   "fcm_service_account": path, "fcm_project": "parley-test"}

It runs until SIGTERM/SIGINT, or until its stdin reaches EOF (so a test that dies never leaves
it behind; pass --ignore-stdin to run it by hand in the background).

Listeners:
  webpush  plain HTTP/1.1; endpoints http://127.0.0.1:<port>/push/<subscription id>
  apns     HTTP/2 over TLS, ALPN "h2" only, certificate for localhost and 127.0.0.1 signed by
           the CA in apns-ca.pem; path /3/device/<token>
  fcm      plain HTTP/1.1; POST /token (OAuth JWT bearer grant), and
           POST /v1/projects/parley-test/messages:send
  control  plain HTTP/1.1 JSON API for the tests:
           POST /subscribe [{"vapid_key", "private_key", "auth"}]
                -> {"id", "endpoint", "keys": {"p256dh", "auth"}}
           POST /script {"target", "responses": [{"status", "headers", "body",
                         "fcm_error", "apns_reason", "delay_ms"}...]}
           GET  /log?n=N&timeout_ms=T[&provider=P]  -> {"records": [...]}
           GET  /delayed?n=N&timeout_ms=T  -> {"delayed": requests that have begun a scripted
                delay_ms (long-polls until n have), so a test knows a request is being held
           GET  /stats  -> {"apns_jwts": distinct APNs JWTs, "fcm_token_grants": n}
           POST /reset  clears records, scripts and stats (subscriptions and issued FCM
                        access tokens stay: the server under test still holds them)

Every request to a provider is recorded (see new_record). Checks that fail are listed in the
record's "errors" and do not change the answer, except authentication failures, which are
answered as the real provider would (Web Push 401/403, APNs 403, FCM 401, token grant 400).
"""

import argparse
import asyncio
import base64
import binascii
import collections
import dataclasses
import datetime
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid

import http_ece
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"
APNS_TOPIC = "com.example.parley"
FCM_PROJECT = "parley-test"
FCM_CLIENT_EMAIL = "parley@parley-test.iam.gserviceaccount.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
FCM_ACCESS_TOKEN_SECONDS = 3599

# Sizes the providers document: RFC 8030 push services must accept 4096 bytes of body (and
# may refuse more); APNs accepts at most 4096 bytes of payload; FCM at most 4096 of data.
WEBPUSH_MAX_BODY = 4096
APNS_MAX_BODY = 4096
FCM_MAX_DATA = 4096


# ---------------------------------------------------------------------------------------------
# Small helpers


def now_ms():
    return int(time.time() * 1000)


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """Decodes base64url, with or without padding; raises ValueError on any other alphabet
    (urlsafe_b64decode alone would silently drop stray characters)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise ValueError("not base64url")
    text = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as e:
        raise ValueError(f"not base64url: {e}") from None


def p256_public_from_point(point):
    """An uncompressed P-256 point (65 bytes, 0x04 || X || Y) as a public key object."""
    if len(point) != 65 or point[0] != 4:
        raise ValueError(f"not an uncompressed P-256 point ({len(point)} bytes)")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


def p256_point(public_key):
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def json_or_none(data):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def text_or_none(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def verify_jwt(token, key, algorithm, errors):
    """Checks the signature (and only the signature: the claims are checked by the caller, with
    each provider's own rules and messages). Returns {"header", "claims"} or None."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.PyJWTError as e:
        errors.append(f"JWT rejected ({algorithm}): {type(e).__name__}: {e}")
        return None
    return {"header": header, "claims": claims}


def int_claim(claims, name, errors):
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.append(f"JWT claim {name!r} missing or not an integer: {value!r}")
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Credentials


@dataclasses.dataclass
class Credentials:
    ca_path: str
    cert_path: str
    cert_key_path: str
    apns_key_path: str
    apns_public_key: ec.EllipticCurvePublicKey
    fcm_account_path: str
    fcm_public_key: rsa.RSAPublicKey
    fcm_token_uri: str


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def pkcs8_pem(private_key):
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca():
    """A self-signed P-256 CA, with the extensions strict verifiers (webpki) expect."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Parley push fakes test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert):
    """The APNs listener's certificate: localhost and 127.0.0.1 as subject alternative names
    (verifiers ignore the CN), server auth only, not a CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def fcm_service_account(private_key, token_uri):
    """A service-account key file shaped exactly like the ones Google's console hands out."""
    return {
        "type": "service_account",
        "project_id": FCM_PROJECT,
        "private_key_id": secrets.token_hex(20),
        "private_key": pkcs8_pem(private_key).decode("ascii"),
        "client_email": FCM_CLIENT_EMAIL,
        "client_id": str(secrets.randbelow(10**21 - 10**20) + 10**20),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
        + urllib.parse.quote(FCM_CLIENT_EMAIL, safe=""),
        "universe_domain": "googleapis.com",
    }


def generate_credentials(directory, fcm_port):
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.abspath(os.path.join(directory, name))  # noqa: E731

    ca_key, ca_cert = make_ca()
    server_key, server_cert = make_server_cert(ca_key, ca_cert)
    write_file(path("apns-ca.pem"), ca_cert.public_bytes(serialization.Encoding.PEM))
    write_file(path("apns-cert.pem"), server_cert.public_bytes(serialization.Encoding.PEM))
    write_file(path("apns-cert-key.pem"), pkcs8_pem(server_key))

    # Apple's AuthKey_<key id>.p8 is a PKCS#8 PEM of a P-256 key.
    apns_key = ec.generate_private_key(ec.SECP256R1())
    write_file(path("apns-key.p8"), pkcs8_pem(apns_key))

    fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token_uri = f"http://127.0.0.1:{fcm_port}/token"
    account = fcm_service_account(fcm_key, token_uri)
    write_file(path("fcm-service-account.json"), json.dumps(account, indent=2).encode())

    return Credentials(
        ca_path=path("apns-ca.pem"),
        cert_path=path("apns-cert.pem"),
        cert_key_path=path("apns-cert-key.pem"),
        apns_key_path=path("apns-key.p8"),
        apns_public_key=apns_key.public_key(),
        fcm_account_path=path("fcm-service-account.json"),
        fcm_public_key=fcm_key.public_key(),
        fcm_token_uri=token_uri,
    )


# ---------------------------------------------------------------------------------------------
# State shared by the listeners (one asyncio loop: no locking needed between awaits)


@dataclasses.dataclass
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    vapid_key: str | None  # the applicationServerKey it was restricted to, if any


class State:
    def __init__(self, creds, ports):
        self.creds = creds
        self.ports = ports
        self.subscriptions = {}
        self.fcm_access_tokens = {}  # token -> expiry (unix seconds)
        self.fcm_message_counter = 0
        self.changed = asyncio.Condition()
        self.reset()

    def reset(self):
        self.records = []
        self.scripts = collections.defaultdict(collections.deque)
        self.apns_jwts = set()
        self.fcm_token_grants = 0
        self.delayed = 0

    async def add_record(self, record):
        self.records.append(record)
        async with self.changed:
            self.changed.notify_all()

    def take_script(self, target):
        queue = self.scripts.get(target)
        if queue:
            return queue.popleft()
        return None


# ---------------------------------------------------------------------------------------------
# HTTP plumbing (plain ASGI on top of hypercorn)


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict  # lower-case name -> value (repeated headers joined with ", ")
    body: bytes
    http_version: str
    port: int


@dataclasses.dataclass
class Response:
    status: int
    headers: dict = dataclasses.field(default_factory=dict)
    body: bytes = b""


def json_response(status, obj, headers=None):
    headers = dict(headers or {})
    headers.setdefault("content-type", "application/json")
    return Response(status, headers, json.dumps(obj).encode())


async def read_request(scope, receive):
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {}
    for name, value in scope["headers"]:
        name, value = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        body=bytes(body),
        http_version=scope.get("http_version", ""),
        port=scope["server"][1] if scope.get("server") else 0,
    )


async def send_response(send, response):
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1"))
               for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def new_record(provider, req, target):
    """The log entry of one request; the handler fills in errors, payload and jwt, and
    finish_record the answer."""
    return {
        "provider": provider,
        "target": target,
        "received_at_ms": now_ms(),
        "method": req.method,
        "path": req.path,
        "headers": req.headers,
        "status": None,
        "ok": None,
        "errors": [],
        "payload": None,
        "raw_body": None,
        "jwt": None,
    }


async def finish_record(state, record, response):
    record["status"] = response.status
    record["ok"] = not record["errors"]
    await state.add_record(record)
    return response


# ---------------------------------------------------------------------------------------------
# Scripted answers


# Google's canonical status for each HTTP status, and FCM's error codes
# (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
}
FCM_ERRORS = {  # errorCode -> (default HTTP status, message)
    "UNSPECIFIED_ERROR": (500, "An unknown error occurred."),
    "INVALID_ARGUMENT": (400, "Request contains an invalid argument."),
    "UNREGISTERED": (404, "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "Quota exceeded for quota metric 'Send requests'."),
    "UNAVAILABLE": (503, "The service is currently unavailable."),
    "INTERNAL": (500, "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "Auth error from APNS or Web Push Service"),
}
FCM_ERROR_FOR_STATUS = {
    400: "INVALID_ARGUMENT", 401: "THIRD_PARTY_AUTH_ERROR", 403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE",
}
# APNs reasons (Apple's "Handling notification responses from APNs") -> default HTTP status.
APNS_REASONS = {
    "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
    "BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
    "IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
    "PayloadEmpty": 400, "TopicDisallowed": 400, "BadCertificate": 403,
    "BadCertificateEnvironment": 403, "ExpiredProviderToken": 403, "Forbidden": 403,
    "InvalidProviderToken": 403, "MissingProviderToken": 403, "UnrelatedKeyIdInToken": 403,
    "BadPath": 404, "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410,
    "PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
    "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
}
APNS_REASON_FOR_STATUS = {
    400: "BadDeviceToken", 403: "InvalidProviderToken", 404: "BadPath",
    405: "MethodNotAllowed", 410: "Unregistered", 413: "PayloadTooLarge",
    429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable",
}


def google_error(status, message, error_code=None):
    error = {"code": status, "message": message, "status": GOOGLE_STATUS.get(status, "UNKNOWN")}
    if error_code:
        error["details"] = [{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": error_code,
        }]
    return {"error": error}


def apns_error(status, reason):
    body = {"reason": reason}
    if status == 410:  # Apple adds when the token stopped being valid, for 410 only
        body["timestamp"] = now_ms()
    return body


def scripted_body(provider, spec, status):
    """The body of a scripted answer: the one given, or the provider's error body built from
    the fcm_error/apns_reason shorthand (or from the status alone, for errors)."""
    if "body" in spec:
        return spec["body"]
    if provider == "fcm" and (spec.get("fcm_error") or status >= 400):
        code = spec.get("fcm_error") or FCM_ERROR_FOR_STATUS.get(status, "UNSPECIFIED_ERROR")
        message = FCM_ERRORS.get(code, (status, code))[1]
        return google_error(status, message, code)
    if provider == "apns" and (spec.get("apns_reason") or status >= 400):
        reason = spec.get("apns_reason") or APNS_REASON_FOR_STATUS.get(status, "BadDeviceToken")
        return apns_error(status, reason)
    return None


def scripted_status(provider, spec):
    if "status" in spec:
        return int(spec["status"])
    if provider == "fcm" and spec.get("fcm_error"):
        return FCM_ERRORS.get(spec["fcm_error"], (500, ""))[0]
    if provider == "apns" and spec.get("apns_reason"):
        return APNS_REASONS.get(spec["apns_reason"], 400)
    raise ValueError("a scripted response needs a status (or fcm_error / apns_reason)")


def encode_body(body):
    """Scripted bodies: JSON values are sent as JSON; strings as they are."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        kind = "application/json" if json_or_none(body) is not None else "text/plain"
        return body.encode(), kind
    return json.dumps(body).encode(), "application/json"


async def answer(state, provider, spec, success):
    """The answer to a push: the scripted one when a script is pending (after its delay),
    else the default success. Success headers and body are kept for scripted 2xx answers that
    give none, so a test can script e.g. a plain {"status": 201}."""
    if spec is None:
        return success
    if spec.get("delay_ms"):
        state.delayed += 1
        async with state.changed:
            state.changed.notify_all()
        await asyncio.sleep(spec["delay_ms"] / 1000)
    status = scripted_status(provider, spec)
    body, kind = encode_body(scripted_body(provider, spec, status))
    headers = {}
    if 200 <= status < 300:
        headers.update(success.headers)
        if not body:
            body = success.body
    elif provider == "apns":
        headers["apns-id"] = success.headers["apns-id"]  # Apple sends it with errors too
    if kind:
        headers["content-type"] = kind
    headers.update({k.lower(): str(v) for k, v in spec.get("headers", {}).items()})
    return Response(status, headers, body)


# ---------------------------------------------------------------------------------------------
# Web Push (RFC 8030 protocol, RFC 8291 encryption, RFC 8292 VAPID)


URGENCIES = ("very-low", "low", "normal", "high")


def check_webpush_headers(req, errors):
    if req.method != "POST":
        errors.append(f"method {req.method}, RFC 8030 push requests are POST")
    if req.headers.get("content-encoding") != "aes128gcm":
        errors.append(f"Content-Encoding {req.headers.get('content-encoding')!r}, "
                      "RFC 8291 needs aes128gcm")
    ttl = req.headers.get("ttl")
    if ttl is None:
        errors.append("TTL header missing (RFC 8030 5.2: required)")
    elif not re.fullmatch(r"[0-9]+", ttl):
        errors.append(f"TTL {ttl!r} is not a non-negative integer")
    urgency = req.headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        errors.append(f"Urgency {urgency!r} not one of {', '.join(URGENCIES)}")
    topic = req.headers.get("topic")
    if topic is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", topic):
        errors.append(f"Topic {topic!r} is not 1 to 32 characters of the base64url alphabet")
    if len(req.body) > WEBPUSH_MAX_BODY:
        errors.append(f"body of {len(req.body)} bytes, push services need accept only "
                      f"{WEBPUSH_MAX_BODY}")


def parse_vapid_header(value):
    """`vapid t=<jwt>, k=<key>` (RFC 8292 3), parameters in any order, spacing tolerated.
    Returns (t, k); raises ValueError."""
    scheme, _, params = value.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"authorization scheme {scheme!r}, expected vapid")
    found = {}
    for part in re.split(r"[,\s]+", params.strip()):
        if not part:
            continue
        name, eq, val = part.partition("=")
        if not eq:
            raise ValueError(f"malformed parameter {part!r}")
        found[name.strip().lower()] = val.strip().strip('"')
    if "t" not in found or "k" not in found:
        raise ValueError("vapid needs both t= and k=")
    return found["t"], found["k"]


def check_vapid_claims(claims, origin, errors):
    """RFC 8292 2: aud is the push resource's origin, exp at most 24 h ahead, sub a contact."""
    if claims.get("aud") != origin:
        errors.append(f"VAPID aud {claims.get('aud')!r}, expected the endpoint origin {origin!r}")
    exp = int_claim(claims, "exp", errors)
    now = time.time()
    if exp is not None:
        if exp <= now:
            errors.append(f"VAPID exp {exp} is not in the future (now {int(now)})")
        elif exp > now + 24 * 3600 + 5:  # a few seconds of slack for whole-second rounding
            errors.append(f"VAPID exp {exp} is more than 24 h ahead (now {int(now)})")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        errors.append(f"VAPID sub {sub!r} is not a mailto: or https: contact")


def check_vapid(req, sub, origin, record):
    """Verifies the VAPID authorization. Returns None when authorized, else the status a push
    service answers (RFC 8292 4.2: 401 when absent, 403 when invalid)."""
    errors = record["errors"]
    value = req.headers.get("authorization")
    if value is None:
        errors.append("Authorization header missing (VAPID)")
        return 401
    try:
        token, key = parse_vapid_header(value)
    except ValueError as e:
        errors.append(f"Authorization {value!r}: {e}")
        return 401
    record["vapid_key"] = key
    try:
        public_key = p256_public_from_point(b64url_decode(key))
    except ValueError as e:
        errors.append(f"VAPID k is not a P-256 public key: {e}")
        return 403
    before = len(errors)
    verified = verify_jwt(token, public_key, "ES256", errors)
    if verified is None:
        return 403
    record["jwt"] = verified
    check_vapid_claims(verified["claims"], origin, errors)
    if sub is not None and sub.vapid_key is not None and key.rstrip("=") != sub.vapid_key:
        errors.append("VAPID k differs from the key the subscription was made with")
    return 403 if len(errors) > before else None


def check_aes128gcm_header(body, errors):
    """RFC 8188 2.1 header as RFC 8291 4 constrains it: keyid is the sender's 65-byte public
    key and the whole message is a single record."""
    if len(body) < 21:
        errors.append(f"body of {len(body)} bytes is shorter than an aes128gcm header")
        return
    rs = int.from_bytes(body[16:20], "big")
    idlen = body[20]
    if idlen != 65 or body[21:22] != b"\x04":
        errors.append(f"aes128gcm keyid is {idlen} bytes, RFC 8291 needs the 65-byte "
                      "uncompressed sender public key")
    record = len(body) - 21 - idlen
    if rs < 18:
        errors.append(f"aes128gcm rs {rs} is below the minimum of 18")
    elif record >= rs:
        errors.append(f"record of {record} bytes does not fit one record of rs {rs}: "
                      "RFC 8291 4 needs a single record with rs greater than its size")


def decrypt_webpush(sub, body, record):
    errors = record["errors"]
    check_aes128gcm_header(body, errors)
    try:
        plaintext = http_ece.decrypt(
            body, private_key=sub.private_key, auth_secret=sub.auth_secret, version="aes128gcm"
        )
    except Exception as e:  # http_ece raises ECEException, and others on truncated input
        errors.append(f"aes128gcm decryption failed: {type(e).__name__}: {e}")
        return
    record["plaintext"] = text_or_none(plaintext)
    record["payload"] = json_or_none(plaintext)
    if record["payload"] is None:
        errors.append("decrypted payload is not JSON")


async def handle_webpush(state, req):
    match = re.fullmatch(r"/push/([^/]+)", req.path)
    sub_id = match.group(1) if match else None
    record = new_record("webpush", req, sub_id)
    record["vapid_key"] = None
    record["plaintext"] = None
    sub = state.subscriptions.get(sub_id)
    if match is None:
        record["errors"].append(f"path {req.path!r} is not a push endpoint (/push/<id>)")
    elif sub is None:
        record["errors"].append(f"unknown subscription {sub_id!r}")

    check_webpush_headers(req, record["errors"])
    origin = f"http://127.0.0.1:{req.port}"
    auth_status = check_vapid(req, sub, origin, record)
    if sub is not None:
        decrypt_webpush(sub, req.body, record)

    if auth_status is not None:
        challenge = {"www-authenticate": "vapid"} if auth_status == 401 else {}
        return await finish_record(state, record, Response(auth_status, challenge))
    spec = state.take_script(sub_id)
    if spec is None and sub is None:
        return await finish_record(state, record, Response(404))
    success = Response(201, {
        "location": f"{origin}/message/{uuid.uuid4()}",
        "ttl": req.headers.get("ttl", "0"),
    })
    return await finish_record(state, record, await answer(state, "webpush", spec, success))


def subscription_keys(body):
    """Fresh keys, or the fixed ones a test gives (to replay a published test vector such as
    RFC 8291's Appendix A): private_key as the b64url 32-byte scalar, auth as b64url."""
    if body.get("private_key"):
        scalar = int.from_bytes(b64url_decode(body["private_key"]), "big")
        private_key = ec.derive_private_key(scalar, ec.SECP256R1())
    else:
        private_key = ec.generate_private_key(ec.SECP256R1())
    auth = b64url_decode(body["auth"]) if body.get("auth") else os.urandom(16)
    if len(auth) != 16:
        raise ValueError("auth must be 16 bytes")
    return private_key, auth


def subscribe(state, body):
    """What a browser does on PushManager.subscribe(): a P-256 key pair and an auth secret,
    whose public halves go to the application server. The private half stays here so pushes
    can be decrypted. Optional body fields: vapid_key (restricts the subscription to that
    application server key, like applicationServerKey), private_key and auth (fixed keys)."""
    body = body if isinstance(body, dict) else {}
    sub_id = secrets.token_urlsafe(16)
    private_key, auth = subscription_keys(body)
    vapid_key = body.get("vapid_key")
    state.subscriptions[sub_id] = Subscription(
        sub_id, private_key, auth, vapid_key.rstrip("=") if vapid_key else None
    )
    return {
        "id": sub_id,
        "endpoint": f"http://127.0.0.1:{state.ports['webpush']}/push/{sub_id}",
        "keys": {"p256dh": b64url_encode(p256_point(private_key.public_key())),
                 "auth": b64url_encode(auth)},
    }


# ---------------------------------------------------------------------------------------------
# APNs (Apple's "Sending notification requests to APNs")


APNS_PUSH_TYPES = ("alert", "background")


def check_apns_token(state, req, record):
    """Token-based provider authentication. Returns None when authorized, else Apple's reason
    (always answered with 403)."""
    errors = record["errors"]
    value = req.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if not value:
        errors.append("authorization header missing")
        return "MissingProviderToken"
    if scheme.lower() != "bearer" or not token.strip():
        errors.append(f"authorization {value!r} is not 'bearer <jwt>'")
        return "InvalidProviderToken"
    token = token.strip()
    before = len(errors)
    verified = verify_jwt(token, state.creds.apns_public_key, "ES256", errors)
    if verified is None:
        return "InvalidProviderToken"
    record["jwt"] = verified
    state.apns_jwts.add(token)
    if verified["header"].get("kid") != APNS_KEY_ID:
        errors.append(f"JWT kid {verified['header'].get('kid')!r}, expected {APNS_KEY_ID!r}")
    if verified["claims"].get("iss") != APNS_TEAM_ID:
        errors.append(f"JWT iss {verified['claims'].get('iss')!r}, expected {APNS_TEAM_ID!r}")
    iat = int_claim(verified["claims"], "iat", errors)
    if len(errors) > before:
        return "InvalidProviderToken"
    now = time.time()
    if iat > now + 60:
        errors.append(f"JWT iat {iat} is in the future (now {int(now)})")
        return "InvalidProviderToken"
    if iat < now - 3600:
        errors.append(f"JWT iat {iat} is more than an hour old (now {int(now)})")
        return "ExpiredProviderToken"
    return None


def check_apns_headers(req, errors):
    if req.http_version != "2":
        errors.append(f"HTTP/{req.http_version}: APNs speaks HTTP/2 only")
    if req.method != "POST":
        errors.append(f"method {req.method}, APNs takes POST")
    if req.headers.get("apns-topic") != APNS_TOPIC:
        errors.append(f"apns-topic {req.headers.get('apns-topic')!r}, expected {APNS_TOPIC!r}")
    push_type = req.headers.get("apns-push-type")
    if push_type not in APNS_PUSH_TYPES:
        errors.append(f"apns-push-type {push_type!r}, expected alert or background")
    priority = req.headers.get("apns-priority", "10")  # Apple's default when absent
    if priority not in ("5", "10"):
        errors.append(f"apns-priority {priority!r}, expected 5 or 10")
    elif push_type == "background" and priority != "5":
        errors.append(f"apns-priority {priority} with push type background, Apple requires 5")
    collapse_id = req.headers.get("apns-collapse-id")
    if collapse_id is not None and len(collapse_id.encode()) > 64:
        errors.append(f"apns-collapse-id of {len(collapse_id.encode())} bytes, at most 64")
    expiration = req.headers.get("apns-expiration")
    if expiration is not None and not re.fullmatch(r"[0-9]+", expiration):
        errors.append(f"apns-expiration {expiration!r} is not an integer (UNIX seconds)")
    apns_id = req.headers.get("apns-id")
    if apns_id is not None and not re.fullmatch(
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            apns_id):
        errors.append(f"apns-id {apns_id!r} is not a canonical UUID")


def check_apns_payload(push_type, payload, errors):
    """The aps dictionary each push type needs: a background push is content-available: 1 and
    nothing the user would see; an alert push shows something."""
    aps = payload.get("aps") if isinstance(payload, dict) else None
    if not isinstance(aps, dict):
        errors.append("payload has no aps dictionary")
        return
    visible = [k for k in ("alert", "badge", "sound") if k in aps]
    if push_type == "background":
        if aps.get("content-available") != 1:
            errors.append("background push without aps.content-available = 1")
        if visible:
            errors.append(f"background push with {', '.join(visible)} in aps")
    elif push_type == "alert" and not visible:
        errors.append("alert push with none of alert, badge, sound in aps")


def check_apns_body(req, record):
    errors = record["errors"]
    record["raw_body"] = text_or_none(req.body)
    if len(req.body) > APNS_MAX_BODY:
        errors.append(f"payload of {len(req.body)} bytes, APNs takes at most {APNS_MAX_BODY}")
    payload = json_or_none(req.body)
    if payload is None:
        errors.append("body is not JSON")
        return
    record["payload"] = payload
    check_apns_payload(req.headers.get("apns-push-type"), payload, errors)


async def handle_apns(state, req):
    match = re.fullmatch(r"/3/device/([^/]+)", req.path)
    token = match.group(1) if match else None
    record = new_record("apns", req, token)
    errors = record["errors"]
    if match is None:
        errors.append(f"path {req.path!r} is not /3/device/<token>")
    elif not re.fullmatch(r"[0-9a-fA-F]+", token):
        errors.append(f"device token {token!r} is not hexadecimal")
    check_apns_headers(req, errors)
    check_apns_body(req, record)
    reason = check_apns_token(state, req, record)

    apns_id = req.headers.get("apns-id") or str(uuid.uuid4()).upper()
    if reason is not None:
        rejected = json_response(403, apns_error(403, reason), {"apns-id": apns_id})
        return await finish_record(state, record, rejected)
    success = Response(200, {"apns-id": apns_id})
    response = await answer(state, "apns", state.take_script(token), success)
    return await finish_record(state, record, response)


# ---------------------------------------------------------------------------------------------
# FCM (OAuth 2 JWT bearer grant, then HTTP v1 messages:send)


def check_grant_claims(state, verified, errors):
    claims = verified["claims"]
    if claims.get("iss") != FCM_CLIENT_EMAIL:
        errors.append(f"assertion iss {claims.get('iss')!r}, expected {FCM_CLIENT_EMAIL!r}")
    if claims.get("aud") != state.creds.fcm_token_uri:
        errors.append(f"assertion aud {claims.get('aud')!r}, "
                      f"expected the token_uri {state.creds.fcm_token_uri!r}")
    scope = claims.get("scope")
    if not isinstance(scope, str) or FCM_SCOPE not in scope.split():
        errors.append(f"assertion scope {scope!r} lacks {FCM_SCOPE}")
    iat = int_claim(claims, "iat", errors)
    exp = int_claim(claims, "exp", errors)
    if iat is None or exp is None:
        return
    now = time.time()
    if exp - iat > 3600:
        errors.append(f"assertion lifetime exp - iat = {exp - iat} s, at most 3600")
    if exp <= now:
        errors.append(f"assertion exp {exp} has passed (now {int(now)})")
    if iat > now + 60:
        errors.append(f"assertion iat {iat} is in the future (now {int(now)})")


async def handle_fcm_token(state, req):
    record = new_record("fcm_token", req, None)
    errors = record["errors"]
    record["raw_body"] = text_or_none(req.body)
    if req.method != "POST":
        errors.append(f"method {req.method}, the token endpoint takes POST")
    if req.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        errors.append(f"content-type {req.headers.get('content-type')!r}, "
                      "expected application/x-www-form-urlencoded")
    form = dict(urllib.parse.parse_qsl(req.body.decode("latin-1")))
    record["payload"] = form
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        errors.append(f"grant_type {form.get('grant_type')!r}, expected the JWT bearer grant")
    assertion = form.get("assertion")
    if not assertion:
        errors.append("no assertion")
    else:
        verified = verify_jwt(assertion, state.creds.fcm_public_key, "RS256", errors)
        if verified is not None:
            record["jwt"] = verified
            check_grant_claims(state, verified, errors)
    if errors:
        return await finish_record(state, record, json_response(
            400, {"error": "invalid_grant", "error_description": "; ".join(errors)}))
    token = "ya29.fake-" + secrets.token_urlsafe(32)
    state.fcm_access_tokens[token] = time.time() + FCM_ACCESS_TOKEN_SECONDS
    state.fcm_token_grants += 1
    return await finish_record(state, record, json_response(200, {
        "access_token": token, "expires_in": FCM_ACCESS_TOKEN_SECONDS, "token_type": "Bearer"}))


def check_fcm_bearer(state, req, errors):
    value = req.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        errors.append(f"authorization {value!r} is not 'Bearer <access token>'")
        return False
    expiry = state.fcm_access_tokens.get(token.strip())
    if expiry is None:
        errors.append("bearer token was not issued by the token endpoint")
        return False
    if expiry < time.time():
        errors.append("bearer token has expired")
        return False
    return True


FCM_MESSAGE_FIELDS = {"name", "data", "notification", "android", "webpush", "apns",
                      "fcm_options", "token", "topic", "condition"}
FCM_ANDROID_FIELDS = {"collapse_key", "priority", "ttl", "restricted_package_name", "data",
                      "notification", "fcm_options", "direct_boot_ok"}
RESERVED_DATA_KEY = re.compile(r"^(from|notification|message_type|google.*|gcm.*)$")


def check_string_map(what, value, errors):
    if not isinstance(value, dict):
        errors.append(f"{what} is not an object")
        return {}
    for k, v in value.items():
        if not isinstance(v, str):
            errors.append(f"{what}[{k!r}] is {type(v).__name__}, FCM takes strings only")
    return value


def check_android(android, errors):
    if not isinstance(android, dict):
        errors.append("message.android is not an object")
        return
    unknown = set(android) - FCM_ANDROID_FIELDS
    if unknown:
        errors.append(f"unknown fields in message.android: {sorted(unknown)}")
    priority = android.get("priority")
    if priority is not None and str(priority).upper() not in ("NORMAL", "HIGH"):
        errors.append(f"android.priority {priority!r}, expected normal or high")
    ttl = android.get("ttl")
    duration = r"[0-9]+(\.[0-9]{1,9})?s"  # protobuf Duration in JSON, e.g. "3.5s"
    if ttl is not None and not (isinstance(ttl, str) and re.fullmatch(duration, ttl)):
        errors.append(f"android.ttl {ttl!r} is not a duration such as \"3.5s\"")
    if "collapse_key" in android and not isinstance(android["collapse_key"], str):
        errors.append("android.collapse_key is not a string")
    if "data" in android:
        check_string_map("android.data", android["data"], errors)


def check_fcm_message(body, errors):
    """Returns the message object (possibly empty) after checking its shape."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        errors.append("body is not {\"message\": {...}}")
        return {}
    unknown = set(body) - {"message", "validate_only"}
    if unknown:
        errors.append(f"unknown top-level fields: {sorted(unknown)}")
    message = body["message"]
    unknown = set(message) - FCM_MESSAGE_FIELDS
    if unknown:
        errors.append(f"unknown fields in message: {sorted(unknown)}")
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if targets != ["token"]:
        errors.append(f"message targets {targets}, expected exactly a token")
    if "android" in message:
        check_android(message["android"], errors)
    return message


def decode_data(message, errors):
    """The data map with each value JSON-decoded where it parses (so a test can compare
    numbers such as seq), after FCM's own rules on data."""
    if "data" not in message:
        return None
    data = check_string_map("message.data", message["data"], errors)
    reserved = [k for k in data if RESERVED_DATA_KEY.match(k)]
    if reserved:
        errors.append(f"reserved data keys {reserved}")
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in data.items())
    if size > FCM_MAX_DATA:
        errors.append(f"data of {size} bytes, FCM takes at most {FCM_MAX_DATA}")
    decoded = {}
    for k, v in data.items():
        parsed = json_or_none(v) if isinstance(v, str) else None
        decoded[k] = parsed if parsed is not None else v
    return decoded


async def handle_fcm_send(state, req):
    record = new_record("fcm", req, None)
    errors = record["errors"]
    record["raw_body"] = text_or_none(req.body)
    if req.method != "POST":
        errors.append(f"method {req.method}, messages:send takes POST")
    if req.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        errors.append(f"content-type {req.headers.get('content-type')!r}, "
                      "expected application/json")
    body = json_or_none(req.body)
    message = check_fcm_message(body, errors)
    record["target"] = message.get("token")
    record["payload"] = decode_data(message, errors)

    if not check_fcm_bearer(state, req, errors):
        return await finish_record(state, record, json_response(401, google_error(
            401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                 "token, login cookie or other valid authentication credential.")))
    state.fcm_message_counter += 1
    success = json_response(200, {
        "name": f"projects/{FCM_PROJECT}/messages/{state.fcm_message_counter}"})
    spec = state.take_script(record["target"]) if record["target"] else None
    return await finish_record(state, record, await answer(state, "fcm", spec, success))


async def handle_fcm(state, req):
    if req.path == "/token":
        return await handle_fcm_token(state, req)
    if req.path == f"/v1/projects/{FCM_PROJECT}/messages:send":
        return await handle_fcm_send(state, req)
    record = new_record("fcm", req, None)
    record["errors"].append(f"path {req.path!r} is neither /token nor "
                            f"/v1/projects/{FCM_PROJECT}/messages:send")
    return await finish_record(state, record, json_response(
        404, google_error(404, "Requested entity was not found.")))


# ---------------------------------------------------------------------------------------------
# Control API


def add_script(state, body):
    if not isinstance(body, dict) or not isinstance(body.get("target"), str) \
            or not isinstance(body.get("responses"), list):
        raise ValueError('expected {"target": str, "responses": [...]}')
    for spec in body["responses"]:
        if not isinstance(spec, dict):
            raise ValueError("each response is an object")
        if "status" in spec:
            int(spec["status"])  # raises ValueError for a test's typo, answered with 400
        if not any(k in spec for k in ("status", "fcm_error", "apns_reason")):
            raise ValueError("each response needs status, fcm_error or apns_reason")
    state.scripts[body["target"]].extend(body["responses"])
    return {"target": body["target"], "pending": len(state.scripts[body["target"]])}


async def wait_for_records(state, query):
    """GET /log: long-polls until n records (of the provider, if given) exist or the timeout
    passes, then returns all of them in arrival order (received_at_ms)."""
    n = int(query.get("n", 0))
    timeout = int(query.get("timeout_ms", 0)) / 1000
    provider = query.get("provider")
    selected = lambda: [r for r in state.records if provider in (None, r["provider"])]  # noqa: E731
    try:
        async with state.changed:
            await asyncio.wait_for(state.changed.wait_for(lambda: len(selected()) >= n), timeout)
    except asyncio.TimeoutError:
        pass
    # Records are logged once answered; a scripted delay must not reorder them.
    return {"records": sorted(selected(), key=lambda r: r["received_at_ms"])}


async def wait_for_delayed(state, query):
    """GET /delayed: long-polls until n requests have begun a scripted delay."""
    n = int(query.get("n", 0))
    timeout = int(query.get("timeout_ms", 0)) / 1000
    try:
        async with state.changed:
            await asyncio.wait_for(state.changed.wait_for(lambda: state.delayed >= n), timeout)
    except asyncio.TimeoutError:
        pass
    return {"delayed": state.delayed}


async def handle_control(state, req):
    route = (req.method, req.path)
    body = json_or_none(req.body) if req.body else None
    try:
        if route == ("POST", "/subscribe"):
            return json_response(200, subscribe(state, body))
        if route == ("POST", "/script"):
            return json_response(200, add_script(state, body))
        if route == ("GET", "/log"):
            return json_response(200, await wait_for_records(state, req.query))
        if route == ("GET", "/delayed"):
            return json_response(200, await wait_for_delayed(state, req.query))
        if route == ("GET", "/stats"):
            return json_response(200, {"apns_jwts": len(state.apns_jwts),
                                       "fcm_token_grants": state.fcm_token_grants})
        if route == ("POST", "/reset"):
            state.reset()
            return json_response(200, {})
    except (ValueError, TypeError) as e:
        return json_response(400, {"error": str(e)})
    return json_response(404, {"error": f"no route {req.method} {req.path}"})


# ---------------------------------------------------------------------------------------------
# Serving


def make_app(state):
    handlers = {
        state.ports["webpush"]: handle_webpush,
        state.ports["apns"]: handle_apns,
        state.ports["fcm"]: handle_fcm,
        state.ports["control"]: handle_control,
    }

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]  # startup / shutdown
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        req = await read_request(scope, receive)
        try:
            response = await handlers[req.port](state, req)
        except Exception as e:  # a fake must answer; the test sees the 500 and stderr
            print(f"push_fakes: {req.method} {req.path}: {type(e).__name__}: {e}", file=sys.stderr)
            response = json_response(500, {"error": f"{type(e).__name__}: {e}"})
        await send_response(send, response)

    return app


def listen():
    """Binds one listening socket on an ephemeral port of 127.0.0.1 now, so the port is known
    (for the JSON line and the FCM token_uri) before the server starts; hypercorn adopts it
    through fd://."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def hypercorn_config(creds, socks):
    config = Config()
    # The TLS bind is the APNs listener; the insecure binds the plain HTTP/1.1 ones.
    config.bind = [f"fd://{socks['apns'].detach()}"]
    config.insecure_bind = [f"fd://{socks[n].detach()}" for n in ("webpush", "fcm", "control")]
    config.certfile = creds.cert_path
    config.keyfile = creds.cert_key_path
    config.alpn_protocols = ["h2"]  # APNs is HTTP/2 only
    config.keep_alive_timeout = 300  # like real providers, keep idle pooled connections open
    config.graceful_timeout = 1
    config.loglevel = "WARNING"
    config.accesslog = None
    config.errorlog = "-"  # stderr; stdout carries only the JSON line
    return config


def watch_stdin(loop, stop):
    """Ends the process when stdin reaches EOF: the parent test holds the pipe, so its death,
    however abrupt, closes it."""
    def wait_eof():
        # os.read on the raw descriptor, not sys.stdin: a thread blocked inside the buffered
        # reader holds its lock, and interpreter shutdown (after SIGTERM) aborts on that lock.
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already ended (SIGTERM came first)
            pass
    threading.Thread(target=wait_eof, daemon=True).start()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="scratch directory for credentials")
    parser.add_argument("--ignore-stdin", action="store_true",
                        help="do not exit when stdin reaches EOF")
    args = parser.parse_args()

    socks = {name: listen() for name in ("webpush", "apns", "fcm", "control")}
    ports = {name: s.getsockname()[1] for name, s in socks.items()}
    creds = generate_credentials(args.dir, ports["fcm"])
    state = State(creds, ports)
    config = hypercorn_config(creds, socks)
    config.create_ssl_context()  # fail here, before announcing, if the certificate is unusable

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.ignore_stdin:
        watch_stdin(loop, stop)

    server = asyncio.ensure_future(serve(make_app(state), config, shutdown_trigger=stop.wait))
    # Announce only once hypercorn has adopted the sockets (they already accept connections:
    # they listen since listen(), so nothing sent in between is lost).
    await asyncio.sleep(0)
    print(json.dumps({
        **ports,
        "apns_ca": creds.ca_path,
        "apns_key": creds.apns_key_path,
        "apns_key_id": APNS_KEY_ID,
        "apns_team_id": APNS_TEAM_ID,
        "apns_topic": APNS_TOPIC,
        "fcm_service_account": creds.fcm_account_path,
        "fcm_project": FCM_PROJECT,
    }), flush=True)
    await server


if __name__ == "__main__":
    asyncio.run(main())
