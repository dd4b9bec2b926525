#!/usr/bin/env python3
"""A scripted POS shift against a running posguard agent, through its local API (the same
newline-delimited JSON any POS application speaks). Used by scripts/demo.sh.

Usage: pos_shift.py SOCKET ADMIN ADMIN_PASSWORD TOTP_SECRET COLLECTOR_BIN COLLECTOR_CONFIG OPS_KEY
The collector binary, its configuration and the ops key are used for the lockdown step.
"""
import base64
import json
import socket
import subprocess
import sys
import time


class Agent:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.next_id = 1

    def call(self, method, **params):
        self.next_id += 1
        self.file.write(json.dumps({"v": 1, "id": self.next_id, "method": method, "params": params}) + "\n")
        self.file.flush()
        return json.loads(self.file.readline())


def step(text):
    print(f"\n--- {text}")


def show(label, response):
    if response.get("ok"):
        result = response.get("result")
        shown = {k: v for k, v in result.items() if k not in ("token", "challenge", "value_b64")} if isinstance(result, dict) else result
        print(f"  {label:<44} ok     {json.dumps(shown)[:110]}")
    else:
        err = response["error"]
        extra = f" (retry after {err['retry_after_secs']} s)" if "retry_after_secs" in err else ""
        print(f"  {label:<44} {err['code']:<18}{extra}")
    return response


def totp(secret):
    return subprocess.check_output(["oathtool", "--totp", "-b", secret], text=True).strip()


def main():
    sock_path, admin, password, secret = sys.argv[1:5]
    collector_bin, collector_config, ops_key = sys.argv[5:8]
    a = Agent(sock_path)

    step("the SuperAdmin logs in with a TOTP code (the code already used at provisioning is refused as a replay)")
    code = totp(secret)
    r = show("admin login, same code as provisioning", a.call("login", clerk=admin, secret=password, totp=code))
    if not r.get("ok"):
        wait = 30 - int(time.time()) % 30 + 1
        print(f"  (waiting {wait} s for the next TOTP time step)")
        time.sleep(wait)
        # The agent closes a connection idle for 30 s (api.idle_timeout_secs): connect again.
        a = Agent(sock_path)
        r = show("admin login, next code", a.call("login", clerk=admin, secret=password, totp=totp(secret)))
    admin_token = r["result"]["token"]

    step("the admin enrolls the shift's staff and a honeypot account")
    show("enroll anna (Clerk, PIN)", a.call("clerk.enroll", token=admin_token, clerk="anna", role="Clerk", secret="4821"))
    show("enroll bob (Clerk, PIN)", a.call("clerk.enroll", token=admin_token, clerk="bob", role="Clerk", secret="7315"))
    show("enroll sue (Supervisor, PIN)", a.call("clerk.enroll", token=admin_token, clerk="sue", role="Supervisor", secret="246810"))
    show("enroll 'backoffice' (honeypot)", a.call("clerk.enroll", token=admin_token, clerk="backoffice", role="Clerk", secret="0000", honeypot=True))

    step("clerks log in and sell")
    anna = show("anna logs in", a.call("login", clerk="anna", secret="4821"))["result"]["token"]
    show("sale recorded (drawer open)", a.call("audit.record", token=anna, action="drawer_open", reference="receipt R-1001"))
    show("price override recorded", a.call("audit.record", token=anna, action="price_override", amount_minor=499, currency="EUR", reference="line 3"))

    step("someone guesses bob's PIN: progressive delay, then lockout after 10 failures")
    for i in range(1, 12):
        r = a.call("login", clerk="bob", secret=f"{1000 + i}")
        if not r["ok"] and r["error"]["code"] == "throttled":
            wait = r["error"].get("retry_after_secs", 1)
            time.sleep(wait)
            a = Agent(sock_path)  # the delay reaches 30 s, the agent's idle timeout
            r = a.call("login", clerk="bob", secret=f"{1000 + i}")
        show(f"wrong PIN #{i}", r)
    show("bob with the right PIN, while locked out", a.call("login", clerk="bob", secret="7315"))

    step("a refund needs a supervisor: sue approves anna's session (a different person)")
    show("anna approves herself", a.call("elevate", token=anna, approver="anna", approver_secret="4821", role="Supervisor"))
    r = show("sue approves anna", a.call("elevate", token=anna, approver="sue", approver_secret="246810", role="Supervisor", purpose="refund"))
    anna = r["result"]["token"]
    show("refund recorded", a.call("audit.record", token=anna, action="refund", amount_minor=1299, currency="EUR", reference="receipt R-0997"))

    step("the shop is offline: a transaction goes to the encrypted cache")
    txn = json.dumps({"receipt": "R-1002", "total_minor": 2599, "items": 3}).encode()
    show("cache.put R-1002", a.call("cache.put", id="txn-R-1002", value_b64=base64.b64encode(txn).decode(), retention_secs=86400))
    got = a.call("cache.get", id="txn-R-1002")
    print(f"  {'cache.get R-1002':<44} ok     {base64.b64decode(got['result']['value_b64']).decode()}")
    show("cache data key rotated (admin session)", a.call("cache.rotate_key", token=admin_token))
    card = json.dumps({"receipt": "R-1003", "pan": "4111 1111 1111 1111"}).encode()
    show("cache.put with a card number in it", a.call("cache.put", id="txn-R-1003", value_b64=base64.b64encode(card).decode()))

    step("someone tries the honeypot account")
    show("login as 'backoffice'", a.call("login", clerk="backoffice", secret="0000"))

    step("operations lock the terminal down from the collector (a signed command)")
    device = a.call("status")["result"]["device_id"]
    subprocess.check_call(
        [collector_bin, "command", "--device", device, "--ops-key", ops_key, "lockdown", "--config", collector_config],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(150):
        if a.call("status")["result"]["lockdown"]:
            break
        time.sleep(0.2)
    print(f"  {'terminal in lockdown':<44} {a.call('status')['result']['lockdown']}")
    show("anna's session after lockdown", a.call("touch", token=anna))
    show("anna logs in during lockdown", a.call("login", clerk="anna", secret="4821"))

    step("end of shift: wait until the collector has acknowledged everything")
    for _ in range(300):
        s = a.call("status")["result"]
        if s["uplink"]["acked_seq"] >= s["journal"]["head_seq"]:
            break
        time.sleep(0.2)
    s = a.call("status")["result"]
    print(f"  journal head {s['journal']['head_seq']}, acknowledged by the collector up to {s['uplink']['acked_seq']}")


if __name__ == "__main__":
    main()
