#!/usr/bin/env python3
"""Prints an HS256 JSON Web Token, as a front door would mint one, for scripts/demo.

    scripts/demo-token.py SECRET_FILE ORG_ID TOPIC...

The token's tenant is ORG_ID, it may read the TOPICs, and it expires in an hour.
"""
import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    secret = open(sys.argv[1], "rb").read()
    claims = {"sub": "demo", "org_id": sys.argv[2], "session_id": "demo-session",
              "scopes": sys.argv[3:], "exp": int(time.time()) + 3600}
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    print(f"{header}.{body}.{b64url(signature)}")


main()
