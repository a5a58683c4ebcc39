"""`pareto admin ...`: operations on a running deployment (uses REDIS_URL and S3 settings).

    pareto admin rebuild               restore job records missing from Redis from the manifests in S3
    pareto admin key-id KEY            the public id of an API key (reads the key from stdin if KEY is -)
    pareto admin revoke-key KEY_ID     refuse a key from now on (every API replica, within seconds)
    pareto admin unrevoke-key KEY_ID
    pareto admin revoked               list revoked key ids
"""

from __future__ import annotations

import argparse
import json
import re
import sys

KEY_ID = re.compile(r"^k_[0-9a-f]{20}$")


def _stores():
    from core.jobstore import JobStore, redis_client
    from core.objectstore import ObjectStore
    from core.settings import Settings

    settings = Settings()
    objects = ObjectStore(settings)
    return settings, JobStore(redis_client(settings), objects)


def rebuild(args: argparse.Namespace) -> int:
    from core.queue import celery_client
    from core.recovery import rebuild as run

    settings, jobs = _stores()
    counts = run(jobs, celery_client(settings))
    print(json.dumps(counts))
    print(f"restored {counts['restored'] + counts['requeued'] + counts['interrupted']} job records "
          f"({counts['requeued']} queued again, {counts['interrupted']} that were running ended), "
          f"{counts['present']} already present, {counts['unreadable']} unreadable", file=sys.stderr)
    return 0


def key_id(args: argparse.Namespace) -> int:
    from service.auth import key_id as kid

    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    print(kid(key))
    return 0


def _key_id_arg(value: str) -> str:
    if not KEY_ID.match(value):
        raise argparse.ArgumentTypeError("a key id looks like k_ and 20 hex digits (`pareto admin key-id KEY`)")
    return value


def revoke_key(args: argparse.Namespace) -> int:
    from service.guard import revoke, unrevoke

    _, jobs = _stores()
    changed = (unrevoke if args.undo else revoke)(jobs.r, args.key_id)
    print(f"{args.key_id} {'un' if args.undo else ''}revoked{'' if changed else ' (no change)'}")
    return 0


def revoked(args: argparse.Namespace) -> int:
    from service.guard import REVOKED

    _, jobs = _stores()
    for member in sorted(m.decode() for m in jobs.r.smembers(REVOKED)):
        print(member)
    return 0


def add_parser(sub) -> None:
    admin = sub.add_parser("admin", help="operations: rebuild job records, revoke API keys")
    commands = admin.add_subparsers(dest="admin_command", required=True)
    commands.add_parser("rebuild", help="restore job records missing from Redis from the S3 manifests"
                        ).set_defaults(run=rebuild)
    k = commands.add_parser("key-id", help="print the public id of an API key")
    k.add_argument("key", help="the key, or - to read it from stdin")
    k.set_defaults(run=key_id)
    r = commands.add_parser("revoke-key", help="refuse an API key from now on")
    r.add_argument("key_id", type=_key_id_arg)
    r.set_defaults(run=revoke_key, undo=False)
    u = commands.add_parser("unrevoke-key", help="accept a revoked API key again")
    u.add_argument("key_id", type=_key_id_arg)
    u.set_defaults(run=revoke_key, undo=True)
    commands.add_parser("revoked", help="list revoked key ids").set_defaults(run=revoked)
