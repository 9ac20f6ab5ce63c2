"""Credential guessing against the real app with the deployment's default limits: how many failures
get through in ``--seconds`` and what a valid token meets meanwhile (issue 19: 818 failed logins and
833 bad tokens in 5 s, no 429, before the limits).

The app runs in-process (Flask's test client, SQLite, Flask-Limiter's memory storage: the embedded
deployment's shape), so the request rate is the app's own, without a network in between.

    .venv/bin/python benchmarks/auth_flood.py --seconds 5
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path


def app_and_token(root: Path):
    from server.app import create_app
    from server.auth import create_token
    from server.migrate import upgrade
    from server.settings import Settings

    upgrade(f"sqlite:///{root}/db.sqlite")
    st = Settings(database_url=f"sqlite:///{root}/db.sqlite", storage=str(root / "storage"),
                  broker_dir=str(root / "broker"), state_dir=str(root / "state"), data_roots=(str(root),))
    st.ensure_dirs()
    app = create_app(st)
    with app.app_context():
        token = create_token(app.extensions["distillery.db"].scoped(), "alice")
    return app, token, st


def flood(send, seconds: float) -> Counter:
    counts: Counter = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counts[send()] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, token, st = app_and_token(Path(tmp))
        client = app.test_client()
        good = {"Authorization": f"Bearer {token}"}
        rows = [
            ("bad bearer tokens", st.bad_token_limit,
             flood(lambda: client.get("/api/v1/jobs", headers={"Authorization": "Bearer dst_guess"}).status_code,
                   args.seconds)),
            ("failed logins", st.login_limit,
             flood(lambda: client.post("/login", data={"token": "dst_guess"}).status_code, args.seconds)),
            ("valid token, after both", "-",
             flood(lambda: client.get("/api/v1/jobs", headers=good).status_code, args.seconds)),
        ]
    print(f"| attempts for {args.seconds:g} s | limit | requests | 200 | 401 | 429 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, limit, c in rows:
        print(f"| {name} | {limit} | {sum(c.values())} | {c[200]} | {c[401]} | {c[429]} |")


if __name__ == "__main__":
    main()
