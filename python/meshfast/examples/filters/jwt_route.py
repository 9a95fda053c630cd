"""Routing on a JWT claim: verifies the bearer token and puts chosen claims in headers.

Istio routes on ``@request.auth.claims`` after a RequestAuthentication verified the token;
this filter does both halves the meshfast way: it checks an HS256 token from
``Authorization: Bearer ...`` (signature, ``exp``, ``nbf``, optional ``iss``/``aud``) and copies
the claims named in ``claims`` into request headers (``{group: x-jwt-group}``).  The core
matches the routes again after a filter changed the headers, so a VirtualService that matches
``headers: {x-jwt-group: {exact: beta}}`` routes on the claim.  Headers of those names sent
by the client are always removed first, so they cannot be forged.  A bad token gets 401;
a missing one passes without claims unless ``required``.

.. code-block:: yaml

    apiVersion: meshfast.io/v1alpha1
    kind: HttpFilter
    metadata:
      name: jwt
    spec:
      python: jwt_route:JwtClaims
      hosts: [reviews]
      config:
        secret: change-me
        issuer: https://auth.example.com
        claims: {group: x-jwt-group}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import msgspec

from meshfast.filters import HttpFilter, Request, Response

__all__ = ["JwtClaims", "encode_hs256"]


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def encode_hs256(claims: dict[str, Any], secret: str) -> str:
    """A signed HS256 token (for tests and demos)."""
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64encode(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64encode(sig)}"


class InvalidToken(Exception):
    pass


class JwtClaims(HttpFilter):
    class Config(msgspec.Struct, forbid_unknown_fields=True):
        secret: str
        claims: dict[str, str]
        issuer: str | None = None
        audience: str | None = None
        required: bool = False
        leeway_s: int = 30

    config: Config

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header_b64, payload_b64, sig_b64 = token.split(".")
            header = json.loads(_b64decode(header_b64))
            claims = json.loads(_b64decode(payload_b64))
            sig = _b64decode(sig_b64)
        except ValueError as exc:
            raise InvalidToken("malformed token") from exc
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise InvalidToken("only HS256 tokens are accepted")
        if not isinstance(claims, dict):
            raise InvalidToken("the claims are not an object")
        signing_input = f"{header_b64}.{payload_b64}".encode()
        want = hmac.new(self.config.secret.encode(), signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(sig, want):
            raise InvalidToken("bad signature")
        now = time.time()
        leeway = self.config.leeway_s
        if isinstance(claims.get("exp"), int | float) and now > claims["exp"] + leeway:
            raise InvalidToken("token expired")
        if isinstance(claims.get("nbf"), int | float) and now < claims["nbf"] - leeway:
            raise InvalidToken("token not valid yet")
        if self.config.issuer is not None and claims.get("iss") != self.config.issuer:
            raise InvalidToken("wrong issuer")
        if self.config.audience is not None:
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if self.config.audience not in auds:
                raise InvalidToken("wrong audience")
        return claims

    def on_request(self, request: Request) -> Response | None:
        for header in self.config.claims.values():
            request.headers.remove(header)
        auth = request.headers.get("authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            if self.config.required:
                return Response(401, {"www-authenticate": "Bearer"}, "missing bearer token\n")
            return None
        try:
            claims = self.verify(token.strip())
        except InvalidToken as exc:
            challenge = f'Bearer error="invalid_token", error_description="{exc}"'
            return Response(401, {"www-authenticate": challenge}, f"{exc}\n")
        for claim, header in self.config.claims.items():
            value = claims.get(claim)
            if isinstance(value, str | int | float | bool):
                request.headers[header] = str(value)
        return None
