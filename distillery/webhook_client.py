"""``distillery webhooks add|list|remove|deliveries``: be told when your jobs end (``server.webhooks``).

``add URL`` prints the secret once: keep it where your receiver can check each POST's
``X-Distillery-Signature`` (``sha256=`` + HMAC-SHA256 of the raw body with that secret, in hex).
"""
from __future__ import annotations

import argparse

from .api_client import ApiClient, guard
from .text_format import format_table


def _api(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.url, args.token)


def cmd_add(args: argparse.Namespace) -> int:
    body = {"url": args.webhook_url, **({"secret": args.secret} if args.secret else {})}
    hook = _api(args).post("/webhooks", json=body, what="webhooks endpoint")
    print(f"webhook {hook['id']}: {hook['url']} is told when your jobs end (succeeded, failed, cancelled, pruned)")
    print(f"secret (shown once; your receiver checks X-Distillery-Signature with it): {hook['secret']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    hooks = _api(args).get("/webhooks", params={"limit": 200}).get("webhooks", [])
    if not hooks:
        print("no webhooks: `distillery webhooks add URL` adds one")
        return 0
    print(format_table([[str(h["id"]), h["url"], h.get("owner") or "-", h.get("created_at") or "-"] for h in hooks],
                       ["id", "url", "owner", "created"]))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    hook = _api(args).request("DELETE", f"/webhooks/{args.id}", what=f"webhook {args.id}")
    print(f"removed webhook {hook['id']} ({hook['url']})")
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    rows = _api(args).get(f"/webhooks/{args.id}/deliveries", params={"limit": args.limit}).get("deliveries", [])
    if not rows:
        print(f"webhook {args.id} has sent nothing yet (events are for jobs that end after it was added)")
        return 0
    print(format_table([[str(d["id"]), f"{d['job_id']} ({d['payload']['job']['state']})", d["state"], str(d["attempts"]),
                         str(d["last_status"] or d.get("last_error") or "-")[:40], d.get("delivered_at") or "-"] for d in rows],
                       ["event", "job", "state", "tries", "last answer", "delivered"]))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("webhooks", help="webhooks: a signed POST to your URL when one of your jobs ends")
    wsub = p.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    a = wsub.add_parser("add", parents=[common], help="register a URL; prints its secret once")
    a.add_argument("webhook_url", metavar="URL", help="http(s) URL to POST job events to")
    a.add_argument("--secret", help="your own signing secret (16-200 characters); default: a generated one")
    a.set_defaults(func=guard(cmd_add))
    a = wsub.add_parser("list", parents=[common], help="your webhooks")
    a.set_defaults(func=guard(cmd_list))
    a = wsub.add_parser("remove", parents=[common], help="remove a webhook")
    a.add_argument("id", type=int)
    a.set_defaults(func=guard(cmd_remove))
    a = wsub.add_parser("deliveries", parents=[common], help="what was sent to a webhook and how it went")
    a.add_argument("id", type=int)
    a.add_argument("--limit", type=int, default=50)
    a.set_defaults(func=guard(cmd_deliveries))
