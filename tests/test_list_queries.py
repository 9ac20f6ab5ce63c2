"""Issue 22: a list page costs the same number of SQL queries for 1 row and for 200 (no N+1).

The rows are what makes a page expensive: jobs of many owners, each with artifacts, a baseline twin
and a replicate (the relatives ``baseline`` reads), some queued (``waiting_reason``); datasets of many
owners. Counted with SQLAlchemy's ``before_cursor_execute`` on the app's own engine, through the real
Flask app on a migrated SQLite file, as an admin (who sees every owner's rows) and as a user."""
from __future__ import annotations

import pytest
from sqlalchemy import event

PATHS = ("/api/v1/jobs?limit=200", "/api/v1/artifacts?limit=200", "/api/v1/datasets?limit=200")


def _app_with_rows(folder, make_app, groups: int, owners: bool):
    """``groups`` replicate groups (4 jobs each) and datasets, each of another owner if ``owners``, else all alice's."""
    from server.auth import create_token
    from server.models import Artifact, Dataset, Job, User

    app = make_app(folder)
    database = app.extensions["distillery.db"]
    with database.session() as s:
        tokens = {"admin": create_token(s, "root", admin=True), "user": create_token(s, "alice")}
    with database.session() as s:
        alice = s.query(User).filter_by(name="alice").one()
        for i in range(groups):
            owner = alice if i == 0 or not owners else User(name=f"user{i}")
            s.add(owner)
            s.flush()
            row = dict(owner_id=owner.id, attempt=1, progress={"num_classes": 10}, metrics={"val_top1": 50.0})
            student = Job(kind="distill", name=f"s{i}", state="succeeded" if i % 2 else "queued", seeds=2,
                          config={"teacher": {"checkpoint": 1}}, **row)
            s.add(student)
            s.flush()
            replicate = Job(kind="distill", name=f"r{i}", state="running", config={}, replicate_of=student.id, **row)
            s.add(replicate)
            s.flush()
            s.add_all([Job(kind="distill", name=f"b{i}", state="succeeded", config={}, baseline_of=student.id, **row),
                       Job(kind="distill", name=f"rb{i}", state="queued", config={}, baseline_of=replicate.id, **row)])
            for fmt in ("ptl", "checkpoint"):
                s.add(Artifact(job_id=student.id, kind="mobile", format=fmt, path=f"/x/{i}/{fmt}", size=1, sha256="0" * 64))
            s.add(Dataset(name=f"d{i}", path=f"/d/{i}", owner_id=owner.id, source="path", num_classes=10,
                          num_train=1, num_val=1))
        s.commit()
    return app, database, tokens


def _query_counts(app, database, token: str) -> dict[str, tuple[int, int]]:
    """{path: (queries, rows on the page)}"""
    count = {"n": 0}

    def on_execute(*_args, **_kw):
        count["n"] += 1

    event.listen(database.engine, "before_cursor_execute", on_execute)
    try:
        out = {}
        client = app.test_client()
        for path in PATHS:
            count["n"] = 0
            resp = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 200, resp.get_data(as_text=True)
            body = resp.get_json()
            out[path] = (count["n"], len(next(v for k, v in body.items() if isinstance(v, list))))
        return out
    finally:
        event.remove(database.engine, "before_cursor_execute", on_execute)


@pytest.mark.parametrize("who", ["admin", "user"])
def test_list_pages_cost_the_same_queries_for_1_and_200_rows(tmp_path, make_app, who):
    small_app, small_db, small_tokens = _app_with_rows(tmp_path / "one", make_app, 1, owners=who == "admin")
    big_app, big_db, big_tokens = _app_with_rows(tmp_path / "many", make_app, 50, owners=who == "admin")
    try:
        small = _query_counts(small_app, small_db, small_tokens[who])
        big = _query_counts(big_app, big_db, big_tokens[who])
    finally:
        small_db.dispose()
        big_db.dispose()
    # The pages really are long: 200 jobs and 50 datasets (of 50 owners for the admin, all alice's for her).
    assert big["/api/v1/jobs?limit=200"][1] == 200 and big["/api/v1/datasets?limit=200"][1] == 50
    for path in PATHS:
        assert big[path][0] == small[path][0], f"{path}: {small[path]} (queries, rows) vs {big[path]}"
