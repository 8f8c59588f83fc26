"""``longread cache-key``: the gateway's response-cache key for a vendor payload, and why two
payloads do (or do not) share one.

    longread cache-key --vendor openai request.json
    longread cache-key --vendor anthropic --tenant acme request.json
    longread cache-key --vendor openai --explain a.json b.json

The payload is the JSON body the gateway sends upstream (Chat Completions for ``openai`` and
OpenAI-compatible servers, Messages for ``anthropic``). The first form prints one JSON object:
``{"key": ..., "canonical": ..., "parts": ...}``. ``--explain`` prints both keys and every
place where the canonical forms differ, and exits 1 when the keys differ (0 when they are the
same, 2 on bad input), like ``diff``.

The key also depends on the tenant, the upstream name and the cache settings: pass the same
ones as the gateway (``--tenant``, ``--upstream``, or ``--config`` to read the ``[cache]``
table of the gateway's config file) to reproduce its key exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from typing import Any

_CLIP = 120  # longer differing strings are shown around their first difference
_CONTEXT = 40


def register(sub: Any) -> None:
    """Adds the ``cache-key`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "cache-key",
        help="the response-cache key of a vendor payload (--explain: why two differ)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE.json", help="payload file(s), - for stdin")
    p.add_argument("--vendor", required=True, choices=["openai", "anthropic", "openai_compatible"])
    p.add_argument("--explain", action="store_true", help="compare two payloads")
    p.add_argument(
        "--tenant", default="local", help="the tenant (default: local, a gateway without auth)"
    )
    p.add_argument("--upstream", default="", help="the upstream name (default: the vendor)")
    p.add_argument("--config", default=None, help="read [cache] settings from this config")
    p.add_argument("--key-version", type=int, default=None)
    p.add_argument("--strict-whitespace", action="store_true", default=None)
    p.add_argument("--shared", action="store_true", default=None, help="share_across_tenants")
    p.set_defaults(fn=run)


def _load(path: str) -> Any:
    if path == "-":
        return json.load(sys.stdin)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _settings(a: argparse.Namespace) -> tuple[int, bool, bool]:
    cache: dict[str, Any] = {}
    if a.config:
        with open(a.config, "rb") as f:
            cache = tomllib.load(f).get("cache", {})
    version = a.key_version if a.key_version is not None else int(cache.get("key_version", 1))
    strict = a.strict_whitespace or bool(cache.get("strict_whitespace", False))
    shared = a.shared or bool(cache.get("share_across_tenants", False))
    return version, strict, shared


def _clip(a: Any, b: Any) -> dict[str, Any]:
    if not (isinstance(a, str) and isinstance(b, str)) or max(len(a), len(b)) <= _CLIP:
        return {"a": a, "b": b}
    at = 0
    while at < min(len(a), len(b)) and a[at] == b[at]:
        at += 1
    lo = max(0, at - _CONTEXT)

    def window(s: str) -> str:
        return (
            ("..." if lo else "")
            + s[lo : at + _CONTEXT]
            + ("..." if at + _CONTEXT < len(s) else "")
        )

    return {"a": window(a), "b": window(b), "first_difference_at": at}


def run(a: argparse.Namespace) -> int:
    from longread_server.vendors.canonical import KeyParts, cache_key, differences

    want = 2 if a.explain else 1
    if len(a.files) != want:
        print(f"cache-key: expected {want} file(s), got {len(a.files)}", file=sys.stderr)
        return 2
    try:
        version, strict, shared = _settings(a)
        parts = KeyParts(
            namespace="shared" if shared else f"tenant:{a.tenant}",
            upstream=a.upstream or a.vendor,
            key_version=version,
            strict_whitespace=strict,
        )
        keys = [cache_key(a.vendor, _load(path), parts) for path in a.files]
    except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as e:
        print(f"cache-key: {e}", file=sys.stderr)
        return 2
    described: dict[str, Any] = {
        "vendor": a.vendor,
        "upstream": parts.upstream,
        "namespace": parts.namespace,
        "key_version": parts.key_version,
        "strict_whitespace": parts.strict_whitespace,
    }
    if not a.explain:
        single = {"key": keys[0].key, "canonical": keys[0].canonical, "parts": described}
        print(json.dumps(single, ensure_ascii=False, sort_keys=True))
        return 0
    ka, kb = keys
    diffs = [{"path": d.path, **_clip(d.a, d.b)} for d in differences(ka.canonical, kb.canonical)]
    out: dict[str, Any] = {
        "same_key": ka.key == kb.key,
        "a": {"file": a.files[0], "key": ka.key},
        "b": {"file": a.files[1], "key": kb.key},
        "differences": diffs,
        "parts": described,
    }
    print(json.dumps(out, ensure_ascii=False, indent=2, sort_keys=True))
    return 0 if ka.key == kb.key else 1
