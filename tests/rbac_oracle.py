"""Envoy's RBAC filter, as a test oracle: evaluates the RBAC configs Istio's builder emits
(``shared/istio-samples/pilot/pkg/security/authz/builder/testdata/*-out*.yaml``) on a
request, and generates requests that hit and miss each of their matchers.

Test code only.  A request is a dict of the facts the proxy knows: ``principal`` (the peer's
SPIFFE ID or None), ``peer`` (IP: both Envoy's direct and remote IP, as meshfast trusts no
proxy in front), ``destination`` (``ip:port``), ``sni``, ``authority``, ``method``, ``path``
and ``headers`` (lowercase name → value).  There is no JWT and no dynamic metadata:
``metadata`` matchers never match.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator
from typing import Any

Request = dict[str, Any]
Matcher = dict[str, Any]

BASE: Request = {
    "principal": None,
    "peer": "10.255.0.1",
    "destination": "10.255.0.2:7777",
    "sni": None,
    "authority": "base.example",
    "method": "OPTIONS",
    "path": "/base",
    "headers": {},
}


# --- evaluation ---------------------------------------------------------------------------


def string_match(sm: Matcher, value: str | None) -> bool:
    if value is None:
        return False
    fold = sm.get("ignoreCase", False)
    v = value.lower() if fold else value
    for key in ("exact", "prefix", "suffix", "contains"):
        if key in sm:
            want = sm[key].lower() if fold else sm[key]
            return {
                "exact": v == want,
                "prefix": v.startswith(want),
                "suffix": v.endswith(want),
                "contains": want in v,
            }[key]
    if "safeRegex" in sm:
        return re.fullmatch(sm["safeRegex"]["regex"], value) is not None
    raise ValueError(f"unknown string matcher {sm}")


def _header_value(req: Request, name: str) -> str | None:
    lname = name.lower()
    if lname in (":authority", "host"):
        return str(req["authority"])
    if lname == ":method":
        return str(req["method"])
    if lname == ":path":
        return str(req["path"])
    value = req["headers"].get(lname)
    return None if value is None else str(value)


def header_match(h: Matcher, req: Request) -> bool:
    value = _header_value(req, h["name"])
    if "presentMatch" in h:
        return (value is not None) == bool(h["presentMatch"])
    if value is None:
        return False
    if "stringMatch" in h:
        return string_match(h["stringMatch"], value)
    if "safeRegexMatch" in h:
        return re.fullmatch(h["safeRegexMatch"]["regex"], value) is not None
    if "exactMatch" in h:
        return bool(value == h["exactMatch"])
    raise ValueError(f"unknown header matcher {h}")


def _in_cidr(ip: str | None, c: Matcher) -> bool:
    if ip is None:
        return False
    net = ipaddress.ip_network(f"{c['addressPrefix']}/{c.get('prefixLen', 32)}", strict=False)
    return ipaddress.ip_address(ip) in net


def template_regex(t: str) -> str:
    """Envoy's uri_template: ``*`` one segment, ``**`` any number."""
    seg = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"
    out = ""
    i = 0
    while i < len(t):
        if t.startswith("**", i):
            out += seg[:-1] + "/]*"
            i += 2
        elif t[i] == "*":
            out += seg + "+"
            i += 1
        else:
            out += re.escape(t[i])
            i += 1
    return out


def _dest(req: Request) -> tuple[str, int]:
    host, _, port = str(req["destination"]).rpartition(":")
    return host, int(port)


def permission(m: Matcher, req: Request) -> bool:
    if "any" in m:
        return bool(m["any"])
    if "andRules" in m:
        return all(permission(x, req) for x in m["andRules"]["rules"])
    if "orRules" in m:
        return any(permission(x, req) for x in m["orRules"]["rules"])
    if "notRule" in m:
        return not permission(m["notRule"], req)
    if "header" in m:
        return header_match(m["header"], req)
    if "urlPath" in m:
        return string_match(m["urlPath"]["path"], str(req["path"]).split("?")[0])
    if "uriTemplate" in m:
        t = m["uriTemplate"]["typedConfig"]["pathTemplate"]
        return re.fullmatch(template_regex(t), str(req["path"])) is not None
    if "destinationIp" in m:
        return _in_cidr(_dest(req)[0], m["destinationIp"])
    if "destinationPort" in m:
        return _dest(req)[1] == m["destinationPort"]
    if "requestedServerName" in m:
        return string_match(m["requestedServerName"], req["sni"])
    if "metadata" in m:
        return False
    raise ValueError(f"unknown permission {m}")


def principal(m: Matcher, req: Request) -> bool:
    if "any" in m:
        return bool(m["any"])
    if "andIds" in m:
        return all(principal(x, req) for x in m["andIds"]["ids"])
    if "orIds" in m:
        return any(principal(x, req) for x in m["orIds"]["ids"])
    if "notId" in m:
        return not principal(m["notId"], req)
    if "authenticated" in m:
        name = m["authenticated"].get("principalName")
        if req["principal"] is None:
            return False
        return name is None or string_match(name, req["principal"])
    if "directRemoteIp" in m:
        return _in_cidr(req["peer"], m["directRemoteIp"])
    if "remoteIp" in m:
        return _in_cidr(req["peer"], m["remoteIp"])
    if "sourceIp" in m:
        return _in_cidr(req["peer"], m["sourceIp"])
    if "header" in m:
        return header_match(m["header"], req)
    if "metadata" in m:
        return False
    raise ValueError(f"unknown principal {m}")


def policy_matches(p: Matcher, req: Request) -> bool:
    return any(permission(x, req) for x in p.get("permissions", ())) and any(
        principal(x, req) for x in p.get("principals", ())
    )


def allows(filters: list[Matcher], req: Request) -> bool:
    """Every RBAC filter of the chain lets the request through (shadow rules never deny)."""
    for f in filters:
        rules = f["typedConfig"].get("rules")
        if rules is None:
            continue
        action = rules.get("action", "ALLOW")
        matched = any(policy_matches(p, req) for p in (rules.get("policies") or {}).values())
        if (action == "ALLOW" and not matched) or (action == "DENY" and matched):
            return False
    return True


# --- request generation -------------------------------------------------------------------


def _sample_regex(rx: str) -> str:
    """A string Istio's generated regexes match: wildcards filled in minimally."""
    s = rx.removeprefix("(?i)")
    for pattern, repl in (
        ("(.+/|)", ""),
        ("(/.+)?", ""),
        ("[^/]*", "q"),
        ("[^/]+", "q"),
        (".*", "q"),
        (".+", "q"),
    ):
        s = s.replace(pattern, repl)
    return re.sub(r"\\(.)", r"\1", s)


def _string_samples(sm: Matcher) -> list[str]:
    if "exact" in sm:
        out = [sm["exact"]]
    elif "prefix" in sm:
        out = [sm["prefix"] + "zz"]
    elif "suffix" in sm:
        out = ["zz" + sm["suffix"]]
    elif "contains" in sm:
        out = ["zz" + sm["contains"] + "zz"]
    elif "safeRegex" in sm:
        out = [_sample_regex(sm["safeRegex"]["regex"])]
    else:
        return []
    if sm.get("ignoreCase"):
        out += [x.upper() for x in out]
    return out


def _cidr_samples(c: Matcher) -> list[str]:
    net = ipaddress.ip_network(f"{c['addressPrefix']}/{c.get('prefixLen', 32)}", strict=False)
    inside = net.network_address + (1 if net.num_addresses > 2 else 0)
    return [str(inside), str(net.broadcast_address)]


def _set_header(req: Request, name: str, value: str | None) -> None:
    lname = name.lower()
    if lname in (":authority", "host"):
        req["authority"] = value or "absent.example"
    elif lname == ":method":
        req["method"] = value or "OPTIONS"
    elif lname == ":path":
        req["path"] = value or "/"
    elif value is None:
        req["headers"].pop(lname, None)
    else:
        req["headers"][lname] = value


def leaf_moves(m: Matcher) -> Iterator[tuple[str, Any]]:
    """(fact, value) pairs that make the leaf ``m`` true (and a few near misses)."""
    if "header" in m:
        h = m["header"]
        samples: list[str] = []
        if "stringMatch" in h:
            samples = _string_samples(h["stringMatch"])
        elif "safeRegexMatch" in h:
            samples = [_sample_regex(h["safeRegexMatch"]["regex"])]
            if h["safeRegexMatch"]["regex"].startswith("(?i)"):
                samples += [x.upper() for x in samples]
        elif "presentMatch" in h:
            samples = ["present", ""]
        for s in samples:
            yield "header:" + h["name"], s
        yield "header:" + h["name"], None
    elif "urlPath" in m:
        for s in _string_samples(m["urlPath"]["path"]):
            yield "path", s
    elif "uriTemplate" in m:
        t = m["uriTemplate"]["typedConfig"]["pathTemplate"]
        yield "path", t.replace("**", "a/b").replace("*", "seg")
        yield "path", t.replace("**", "").replace("*", "seg")
    elif "destinationIp" in m:
        for ip in _cidr_samples(m["destinationIp"]):
            yield "destination_ip", ip
    elif "destinationPort" in m:
        yield "destination_port", m["destinationPort"]
    elif "requestedServerName" in m:
        for s in _string_samples(m["requestedServerName"]):
            yield "sni", s
    elif "authenticated" in m:
        name = m["authenticated"].get("principalName")
        for s in _string_samples(name) if name else ["spiffe://cluster.local/ns/a/sa/b"]:
            yield "principal", s
        yield "principal", None
    elif "directRemoteIp" in m or "remoteIp" in m or "sourceIp" in m:
        c = m.get("directRemoteIp") or m.get("remoteIp") or m.get("sourceIp")
        for ip in _cidr_samples(c):
            yield "peer", ip


def leaves(m: Any) -> Iterator[Matcher]:
    if isinstance(m, dict):
        keys = {"andRules", "orRules", "notRule", "andIds", "orIds", "notId", "rules", "ids"}
        if not keys & m.keys() and any(k in m for k in LEAF_KEYS):
            yield m
            return
        for v in m.values():
            yield from leaves(v)
    elif isinstance(m, list):
        for v in m:
            yield from leaves(v)


LEAF_KEYS = (
    "header",
    "urlPath",
    "uriTemplate",
    "destinationIp",
    "destinationPort",
    "requestedServerName",
    "authenticated",
    "directRemoteIp",
    "remoteIp",
    "sourceIp",
)


def apply(req: Request, fact: str, value: Any) -> Request:
    out = {**req, "headers": dict(req["headers"])}
    if fact.startswith("header:"):
        _set_header(out, fact[len("header:") :], value)
    elif fact == "destination_ip":
        _, port = _dest(out)
        out["destination"] = f"{value}:{port}"
    elif fact == "destination_port":
        ip, _ = _dest(out)
        out["destination"] = f"{ip}:{value}"
    else:
        out[fact] = value
    return out


def satisfy(m: Matcher, want: bool, req: Request, rng: random.Random, perm: bool) -> Request:
    """Greedily moves ``req`` toward making ``m`` evaluate to ``want`` (a best effort: the
    oracle's verdict is computed afterwards either way)."""
    if "any" in m:
        return req
    for both, children in (("andRules", "rules"), ("andIds", "ids")):
        if both in m:
            kids = m[both][children]
            if want:
                for k in kids:
                    req = satisfy(k, True, req, rng, perm)
                return req
            return satisfy(rng.choice(kids), False, req, rng, perm) if kids else req
    for either, children in (("orRules", "rules"), ("orIds", "ids")):
        if either in m:
            kids = m[either][children]
            if want:
                return satisfy(rng.choice(kids), True, req, rng, perm) if kids else req
            for k in kids:
                req = satisfy(k, False, req, rng, perm)
            return req
    for negation in ("notRule", "notId"):
        if negation in m:
            return satisfy(m[negation], not want, req, rng, perm)
    evaluate = permission if perm else principal
    moves = list(leaf_moves(m))
    rng.shuffle(moves)
    for fact, value in moves:
        moved = apply(req, fact, value)
        if evaluate(m, moved) == want:
            return moved
    return req


def requests(filters: list[Matcher], seed: int = 0, rounds: int = 8) -> list[Request]:
    """Requests that hit and miss each policy's permissions and principals, and single-fact
    variations of them: every leaf matcher's samples applied to each."""
    rng = random.Random(seed)
    out: list[Request] = [dict(BASE, headers={})]
    policies: list[Matcher] = []
    for f in filters:
        for section in ("rules", "shadowRules"):
            rules = f["typedConfig"].get(section) or {}
            policies.extend((rules.get("policies") or {}).values())
    for _ in range(rounds):
        for p in policies:
            for perm in p.get("permissions", ()):
                for princ in p.get("principals", ()):
                    req = satisfy(perm, True, dict(BASE, headers={}), rng, True)
                    req = satisfy(princ, True, req, rng, False)
                    out.append(req)
                    out.append(satisfy(perm, False, req, rng, True))
                    out.append(satisfy(princ, False, req, rng, False))
    moves = [mv for f in filters for leaf in leaves(f) for mv in leaf_moves(leaf)]
    for req in list(out[:200]):
        for fact, value in rng.sample(moves, min(len(moves), 30)):
            out.append(apply(req, fact, value))
    return out
