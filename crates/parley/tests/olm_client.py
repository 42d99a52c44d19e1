#!/usr/bin/env python3
"""An independent E2EE client for the interop test (crates/parley/tests/it/e2ee.rs).

It implements docs/E2EE.md with libolm (python-olm) instead of vodozemac, and talks to a real
Parley server over HTTP and WebSocket only: it publishes its keys, shares its Megolm keys with
every device of every member over Olm to-device messages, encrypts and decrypts messages, and
answers room key requests, so that the Rust SDK and this client read each other in both
directions.

Driven by JSON lines: the test writes commands to stdin, this prints events to stdout.

    args:     --server http://127.0.0.1:PORT --token TOKEN
    stdout:   {"event": "ready", "user_id", "device_id", "curve25519", "ed25519"}
              {"event": "message", "conversation_id", "seq", "sender_id", "kind", "body", "file"?}
              {"event": "undecryptable", "conversation_id", "seq", "reason"}
              {"event": "room_key", "sender_user_id", "conversation_id", "session_id"}
              {"event": "sent", "conversation_id", "seq", "client_id"}
              {"event": "error", "message"}
    stdin:    {"cmd": "send", "conversation_id", "kind", "body"}
              {"cmd": "download", "media_id", "file"}  -> {"event": "downloaded", "media_id", "plaintext_b64"}
              {"cmd": "quit"}

The client exits when stdin closes.
"""

import argparse
import asyncio
import base64
import json
import sys
import threading
import traceback
import urllib.error
import urllib.request
import uuid

import olm
import websockets

OLM = "olm.v1"
MEGOLM = "megolm.v1"


def emit(obj):
    print(json.dumps(obj), flush=True)


def b64decode(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


class RestError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Rest:
    def __init__(self, server, token):
        self.server = server.rstrip("/")
        self.token = token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise RestError(e.code, parsed) from None

    async def __call__(self, method, path, body=None):
        return await asyncio.to_thread(self.call, method, path, body)


class Client:
    def __init__(self, server, token):
        self.rest = Rest(server, token)
        self.server = server
        self.token = token
        self.account = olm.Account()
        self.keys = self.account.identity_keys
        self.user_id = None
        self.device_id = None
        self.ws = None
        self.next_ref = 0
        self.waiting = {}
        self.lock = asyncio.Lock()
        self.olm_sessions = {}  # peer curve25519 -> [olm.Session], most recent last
        self.outbound = {}  # conversation_id -> {"session", "epoch", "members", "shared": set}
        self.sent_sessions = {}  # session_id -> {"conversation_id", "members", "key"}
        self.inbound = {}  # (sender_key, session_id) -> {"session", "conv", "user", "device"}
        self.devices = {}  # user_id -> {device_id: {"curve25519", "ed25519"}}
        self.pending = {}  # (sender_key, session_id) -> [message]
        self.work = asyncio.Queue()

    # --- transport ------------------------------------------------------------------------

    async def connect(self):
        url = self.server.replace("http://", "ws://", 1).rstrip("/") + "/v1/ws"
        self.ws = await websockets.connect(url, max_size=2**20)
        await self.ws.send(json.dumps({"type": "auth", "token": self.token}))
        ready = json.loads(await self.ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"auth refused: {ready}")
        self.user_id, self.device_id = ready["user_id"], ready["device_id"]

    async def request(self, frame):
        self.next_ref += 1
        ref = f"py{self.next_ref}"
        frame = dict(frame, ref=ref)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[ref] = fut
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(fut, 30)

    async def reader(self):
        async for text in self.ws:
            frame = json.loads(text)
            ref = frame.get("ref")
            if ref in self.waiting:
                fut = self.waiting.pop(ref)
                if not fut.done():
                    fut.set_result(frame)
            elif frame.get("type") in ("to_device", "message", "device_list_changed", "keys_low"):
                await self.work.put(frame)

    async def worker(self):
        while True:
            frame = await self.work.get()
            try:
                async with self.lock:
                    await self.handle(frame)
            except Exception as e:  # keep serving; the test sees the error
                emit({"event": "error", "message": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})

    # --- keys -----------------------------------------------------------------------------

    async def upload_keys(self, identity):
        self.account.generate_one_time_keys(50)
        self.account.generate_fallback_key()
        otks = self.account.one_time_keys["curve25519"]
        fallback = self.account.fallback_key["curve25519"]
        body = {"one_time_keys": [{"key_id": k, "key": v} for k, v in otks.items()]}
        for k, v in fallback.items():
            body["fallback_key"] = {"key_id": k, "key": v}
        if identity:
            body["identity"] = {"algorithm": OLM, "keys": dict(self.keys)}
        await self.rest("PUT", "/v1/keys", body)
        self.account.mark_keys_as_published()

    async def device_list(self, user_id, refresh=False):
        if refresh or user_id not in self.devices:
            r = await self.rest("GET", f"/v1/users/{user_id}/devices")
            devices = {}
            for d in r["devices"]:
                ident = d.get("identity")
                if ident and ident.get("algorithm") == OLM:
                    devices[d["device_id"]] = ident["keys"]
            self.devices[user_id] = devices
        return self.devices[user_id]

    async def device(self, user_id, device_id):
        devices = await self.device_list(user_id)
        if device_id not in devices:
            devices = await self.device_list(user_id, refresh=True)
        return devices.get(device_id)

    # --- Olm ------------------------------------------------------------------------------

    def olm_encrypt(self, user_id, device_id, keys, kind, content):
        plain = dict(content)
        plain.update({
            "type": kind,
            "sender_user_id": self.user_id, "sender_device_id": self.device_id,
            "sender_ed25519": self.keys["ed25519"],
            "recipient_user_id": user_id, "recipient_device_id": device_id,
            "recipient_ed25519": keys["ed25519"],
        })
        session = self.olm_sessions[keys["curve25519"]][-1]
        m = session.encrypt(json.dumps(plain))
        return {"algorithm": OLM, "sender_key": self.keys["curve25519"], "type": m.message_type,
                "body": m.ciphertext}

    async def send_olm(self, targets, kind, content):
        """targets: [(user_id, device_id, keys)]; claims keys for devices without a session."""
        need = [t for t in targets if not self.olm_sessions.get(t[2]["curve25519"])]
        if need:
            r = await self.rest("POST", "/v1/keys/claim",
                                {"devices": [{"user_id": u, "device_id": d} for u, d, _ in need]})
            for c in r["devices"]:
                keys = c["identity"]["keys"]
                known = next((k for u, d, k in need if u == c["user_id"] and d == c["device_id"]), None)
                if known is None or known != keys or not c.get("one_time_key"):
                    continue
                s = olm.OutboundSession(self.account, keys["curve25519"], c["one_time_key"]["key"])
                self.olm_sessions.setdefault(keys["curve25519"], []).append(s)
        messages, reached = [], []
        for u, d, keys in targets:
            if not self.olm_sessions.get(keys["curve25519"]):
                continue
            messages.append({"user_id": u, "device_id": d,
                             "payload": self.olm_encrypt(u, d, keys, kind, content)})
            reached.append((u, d))
        for i in range(0, len(messages), 40):
            reply = await self.request({"type": "to_device", "client_id": uuid.uuid4().hex,
                                        "messages": messages[i:i + 40]})
            if reply.get("type") != "to_device_sent":
                raise RuntimeError(f"to_device refused: {reply}")
        return reached

    def olm_decrypt(self, sender_user, sender_device, keys, payload):
        if payload.get("algorithm") != OLM or payload.get("sender_key") != keys["curve25519"]:
            raise ValueError("not from the sender's published identity key")
        peer = keys["curve25519"]
        sessions = self.olm_sessions.setdefault(peer, [])
        plain = None
        if payload["type"] == 0:
            msg = olm.OlmPreKeyMessage(payload["body"])
            for s in reversed(sessions):
                if s.matches(msg, peer):
                    plain = s.decrypt(msg)
                    sessions.remove(s)
                    sessions.append(s)
                    break
            if plain is None:
                s = olm.InboundSession(self.account, msg, peer)
                self.account.remove_one_time_keys(s)
                plain = s.decrypt(msg)
                sessions.append(s)
        else:
            msg = olm.OlmMessage(payload["body"])
            for s in reversed(sessions):
                try:
                    plain = s.decrypt(msg)
                except olm.OlmSessionError:
                    continue
                sessions.remove(s)
                sessions.append(s)
                break
            if plain is None:
                raise ValueError("no Olm session decrypts it")
        p = json.loads(plain)
        want = {
            "sender_user_id": sender_user, "sender_device_id": sender_device,
            "sender_ed25519": keys["ed25519"],
            "recipient_user_id": self.user_id, "recipient_device_id": self.device_id,
            "recipient_ed25519": self.keys["ed25519"],
        }
        for k, v in want.items():
            if p.get(k) != v:
                raise ValueError(f"envelope field {k} does not match")
        return p

    # --- incoming -------------------------------------------------------------------------

    async def handle(self, frame):
        ty = frame["type"]
        if ty == "to_device":
            try:
                await self.on_to_device(frame)
            finally:
                await self.ws.send(json.dumps({"type": "to_device_ack", "up_to_id": frame["id"]}))
        elif ty == "message":
            if frame["kind"] == "encrypted":
                await self.on_encrypted(frame)
            await self.ws.send(json.dumps({"type": "ack", "conversation_id": frame["conversation_id"],
                                           "seq": frame["seq"]}))
        elif ty == "device_list_changed":
            self.devices.pop(frame["user_id"], None)
        elif ty == "keys_low":
            await self.upload_keys(identity=False)

    async def on_to_device(self, t):
        keys = await self.device(t["sender_user_id"], t["sender_device_id"])
        if keys is None:
            raise ValueError("to_device from an unknown device")
        p = self.olm_decrypt(t["sender_user_id"], t["sender_device_id"], keys, t["payload"])
        if p["type"] == "room_key":
            s = olm.InboundGroupSession(p["session_key"])
            if s.id != p["session_id"]:
                raise ValueError("room key of another session")
            key = (keys["curve25519"], s.id)
            self.inbound[key] = {"session": s, "conv": p["conversation_id"], "user": t["sender_user_id"],
                                 "device": t["sender_device_id"]}
            emit({"event": "room_key", "sender_user_id": t["sender_user_id"],
                  "conversation_id": p["conversation_id"], "session_id": s.id})
            for m in self.pending.pop(key, []):
                await self.on_encrypted(m)
        elif p["type"] == "room_key_request":
            sent = self.sent_sessions.get(p["session_id"])
            if sent and sent["conversation_id"] == p["conversation_id"] and t["sender_user_id"] in sent["members"]:
                conv = await self.rest("GET", f"/v1/conversations/{p['conversation_id']}")
                if t["sender_user_id"] in [m["user_id"] for m in conv["conversation"]["members"]]:
                    content = {"conversation_id": p["conversation_id"], "session_id": p["session_id"],
                               "session_key": sent["key"]}
                    await self.send_olm([(t["sender_user_id"], t["sender_device_id"], keys)], "room_key", content)

    async def on_encrypted(self, m):
        body = m["body"]
        key = (body.get("sender_key"), body.get("session_id"))
        rec = self.inbound.get(key)
        if rec is None:
            self.pending.setdefault(key, []).append(m)
            emit({"event": "undecryptable", "conversation_id": m["conversation_id"], "seq": m["seq"],
                  "reason": "waiting for the key"})
            return
        if rec["user"] != m["sender_id"] or rec["device"] != m["sender_device_id"] or rec["conv"] != m["conversation_id"]:
            emit({"event": "undecryptable", "conversation_id": m["conversation_id"], "seq": m["seq"],
                  "reason": "session of another sender or conversation"})
            return
        plain, _index = rec["session"].decrypt(body["ciphertext"])
        p = json.loads(plain)
        if p.get("conversation_id") != m["conversation_id"]:
            emit({"event": "undecryptable", "conversation_id": m["conversation_id"], "seq": m["seq"],
                  "reason": "plaintext of another conversation"})
            return
        out = {"event": "message", "conversation_id": m["conversation_id"], "seq": m["seq"],
               "sender_id": m["sender_id"], "kind": p["kind"], "body": p["body"]}
        if "file" in p:
            out["file"] = p["file"]
        emit(out)

    # --- attachments (Matrix's scheme: AES-256-CTR, SHA-256 of the ciphertext) ------------

    def download(self, media_id, file):
        import hashlib

        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        info = self.rest.call("GET", f"/v1/media/{media_id}")
        with urllib.request.urlopen(info["download"]["url"], timeout=30) as r:
            data = r.read()
        if hashlib.sha256(data).digest() != b64decode(file["sha256"]):
            raise ValueError("the ciphertext's SHA-256 differs from the message's")
        dec = Cipher(algorithms.AES(b64decode(file["key"])), modes.CTR(b64decode(file["iv"]))).decryptor()
        return dec.update(data) + dec.finalize()

    # --- sending --------------------------------------------------------------------------

    async def send(self, conv_id, kind, body):
        client_id = uuid.uuid4().hex
        plaintext = json.dumps({"conversation_id": conv_id, "kind": kind, "body": body})
        refresh = False
        for _ in range(5):
            conv = (await self.rest("GET", f"/v1/conversations/{conv_id}"))["conversation"]
            members = sorted(m["user_id"] for m in conv["members"])
            epoch = conv["device_epoch"]
            out = self.outbound.get(conv_id)
            if out is None or out["epoch"] != epoch or out["members"] != members or out["session"].message_index >= 100:
                s = olm.OutboundGroupSession()
                out = {"session": s, "epoch": epoch, "members": members, "shared": set()}
                self.outbound[conv_id] = out
                self.sent_sessions[s.id] = {"conversation_id": conv_id, "members": members, "key": s.session_key}
            targets = []
            for u in members:
                for d, keys in (await self.device_list(u, refresh=refresh)).items():
                    if (u, d) != (self.user_id, self.device_id) and (u, d) not in out["shared"]:
                        targets.append((u, d, keys))
            if targets:
                content = {"conversation_id": conv_id, "session_id": out["session"].id,
                           "session_key": out["session"].session_key}
                out["shared"].update(await self.send_olm(targets, "room_key", content))
            enc = {"algorithm": MEGOLM, "session_id": out["session"].id,
                   "ciphertext": out["session"].encrypt(plaintext), "sender_key": self.keys["curve25519"],
                   "device_epoch": epoch}
            reply = await self.request({"type": "send", "conversation_id": conv_id, "client_id": client_id,
                                        "kind": "encrypted", "body": enc})
            if reply.get("type") == "sent":
                emit({"event": "sent", "conversation_id": conv_id, "seq": reply["seq"], "client_id": client_id})
                return
            if reply.get("code") == "stale_devices":
                refresh = True
                continue
            raise RuntimeError(f"send refused: {reply}")
        raise RuntimeError("stale_devices kept coming")


def stdin_lines(loop, queue):
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, None)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    c = Client(args.server, args.token)
    await c.connect()
    await c.upload_keys(identity=True)
    reader = asyncio.create_task(c.reader())
    worker = asyncio.create_task(c.worker())
    emit({"event": "ready", "user_id": c.user_id, "device_id": c.device_id,
          "curve25519": c.keys["curve25519"], "ed25519": c.keys["ed25519"]})
    commands = asyncio.Queue()
    threading.Thread(target=stdin_lines, args=(asyncio.get_running_loop(), commands), daemon=True).start()
    while True:
        line = await commands.get()
        if line is None:
            break
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "download":
            try:
                plain = await asyncio.to_thread(c.download, cmd["media_id"], cmd["file"])
                emit({"event": "downloaded", "media_id": cmd["media_id"],
                      "plaintext_b64": base64.b64encode(plain).decode()})
            except Exception as e:
                emit({"event": "error", "message": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
        if cmd["cmd"] == "send":
            try:
                async with c.lock:
                    await c.send(cmd["conversation_id"], cmd.get("kind", "text"), cmd["body"])
            except Exception as e:
                emit({"event": "error", "message": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
    reader.cancel()
    worker.cancel()
    await c.ws.close()


if __name__ == "__main__":
    asyncio.run(main())
