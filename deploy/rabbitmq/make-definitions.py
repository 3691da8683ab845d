#!/usr/bin/env python3
"""Writes deploy/rabbitmq/definitions.json for compose.yaml from registry/hunan.toml.

One broker user per hospital (its code in lower case), which may publish only to the requests
exchange under routing keys starting with its own code and read only its own results queue;
plus the relay's own user `telerelay`. Passwords are the demo ones (`telerelay` for the relay,
`telerelay-demo` for the hospitals): a real deployment generates its own file with real secrets.

Run: python3 deploy/rabbitmq/make-definitions.py
"""
import base64
import hashlib
import json
import os
import re
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
NAMESPACE = "telerelay"


def password_hash(password: str, salt: bytes) -> str:
    # rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ utf8(password))).
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def main() -> None:
    with open(os.path.join(HERE, "../../registry/hunan.toml"), "rb") as registry_file:
        registry = tomllib.load(registry_file)
    # A fixed salt per user keeps the generated file stable across runs (demo credentials only).
    def salt_for(user: str) -> bytes:
        return hashlib.sha256(user.encode()).digest()[:4]

    users = [{"name": "telerelay", "password_hash": password_hash("telerelay", salt_for("telerelay")),
              "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}]
    permissions = [{"user": "telerelay", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    topic_permissions = []
    ns = re.escape(NAMESPACE)
    for hospital in registry["hospital"]:
        code = hospital["code"]
        user = hospital.get("broker_user", code.lower())
        users.append({"name": user, "password_hash": password_hash("telerelay-demo", salt_for(user)),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        permissions.append({"user": user, "vhost": "/", "configure": "^$",
                            "write": f"^{ns}\\.requests$", "read": f"^{ns}\\.results\\.{re.escape(code)}$"})
        topic_permissions.append({"user": user, "vhost": "/", "exchange": f"{NAMESPACE}.requests",
                                  "write": f"^{re.escape(code)}\\.", "read": "^$"})
    definitions = {"users": users, "vhosts": [{"name": "/"}], "permissions": permissions,
                   "topic_permissions": topic_permissions}
    with open(os.path.join(HERE, "definitions.json"), "w") as out:
        json.dump(definitions, out, indent=2)
        out.write("\n")


if __name__ == "__main__":
    main()
