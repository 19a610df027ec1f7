"""A third party verifies a Tollgate session token with PyJWT, knowing only the JWKS URL.

Usage: pyjwt_check.py JWKS_URL TOKEN ISSUER AUDIENCE

Run by tests/token_e2e.rs with the virtualenv of scripts/install-api-test-tools.sh
(`pyjwt[crypto]`). Prints one line per check and exits non-zero on the first wrong verdict:

- the relay's token is accepted, every registered claim required;
- the same token with its payload changed (signature kept) is rejected;
- the token checked for another audience is rejected;
- the token is accepted one second before its `exp` and rejected as expired one second after
  it. PyJWT reads the time as `datetime.now(tz=timezone.utc)` in `jwt.api_jwt`; the check
  freezes that clock instead of sleeping, and the "one second before" control fails loudly
  should a PyJWT release read the time some other way;
- an unsigned (`alg: none`) copy of the token is rejected (algorithm allow-list).
"""

import base64
import json
import sys
from datetime import datetime, timezone
from unittest import mock

import jwt
import jwt.api_jwt

ALGORITHMS = ["ES256", "EdDSA"]
REQUIRED = ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class FrozenDatetime(datetime):
    """`datetime` whose `now()` is a fixed instant (what `jwt.api_jwt` reads the time with)."""

    frozen_at = 0.0

    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(cls.frozen_at, tz=tz or timezone.utc)


def main() -> int:
    jwks_url, token, issuer, audience = sys.argv[1:5]
    failures = 0

    jwks = jwt.PyJWKClient(jwks_url, cache_keys=False, timeout=10)

    def decode(tok: str, aud: str) -> dict:
        key = jwks.get_signing_key_from_jwt(tok)
        return jwt.decode(
            tok,
            key,
            algorithms=ALGORITHMS,
            audience=aud,
            issuer=issuer,
            options={"require": REQUIRED},
        )

    def accept(name: str, tok: str, aud: str):
        nonlocal failures
        try:
            claims = decode(tok, aud)
        except jwt.PyJWTError as e:
            print(f"WRONG: {name}: rejected with {type(e).__name__}: {e}")
            failures += 1
            return None
        print(f"accepted: {name}")
        return claims

    def reject(name: str, tok: str, aud: str, expected: type):
        nonlocal failures
        try:
            decode(tok, aud)
        except expected as e:
            print(f"rejected: {name}: {type(e).__name__}")
            return
        except jwt.PyJWTError as e:
            print(f"WRONG: {name}: rejected for the wrong reason, {type(e).__name__}: {e}")
            failures += 1
            return
        print(f"WRONG: {name}: accepted")
        failures += 1

    header = jwt.get_unverified_header(token)
    print(f"header: alg={header.get('alg')} kid={header.get('kid')}")

    claims = accept("the relay's token", token, audience)
    if claims is None:
        return 1
    for claim in ("sid", "svc"):
        if not isinstance(claims.get(claim), str) or not claims[claim]:
            print(f"WRONG: claim {claim} missing: {claims}")
            failures += 1
    print(f"claims: sub={claims['sub']} aud={claims['aud']} sid={claims['sid']}")

    # (a) The payload changed, header and signature kept: a caller claiming to be someone else.
    head, payload, signature = token.split(".")
    forged = json.loads(b64url_decode(payload))
    forged["sub"] = "mallory"
    tampered = ".".join([head, b64url_encode(json.dumps(forged).encode()), signature])
    reject("tampered payload", tampered, audience, jwt.InvalidSignatureError)

    # (b) A token for one shop presented to another.
    reject("another audience", token, "another-shop", jwt.InvalidAudienceError)

    # (c) Expiry, on a frozen clock.
    exp = int(claims["exp"])
    with mock.patch.object(jwt.api_jwt, "datetime", FrozenDatetime):
        FrozenDatetime.frozen_at = exp - 1
        accept("one second before exp", token, audience)
        FrozenDatetime.frozen_at = exp + 1
        reject("expired (one second after exp)", token, audience, jwt.ExpiredSignatureError)

    # (d) The signature stripped and `alg: none` claimed.
    unsigned_head = dict(header, alg="none")
    unsigned = ".".join([b64url_encode(json.dumps(unsigned_head).encode()), payload, ""])
    reject("alg none", unsigned, audience, jwt.InvalidAlgorithmError)

    if failures:
        print(f"pyjwt: {failures} wrong verdict(s)")
        return 1
    print("pyjwt: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
