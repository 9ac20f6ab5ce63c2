"""Bad requests: each is a 4xx naming the field, and writes nothing."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
import requests
import sqlalchemy
from PIL import Image

from .conftest import distill_config, teacher_config

pytestmark = pytest.mark.integration


def counts(service) -> tuple[int, int, int]:
    with service.db().connect() as c:
        return tuple(c.execute(sqlalchemy.text(f"SELECT count(*) FROM {t}")).scalar()
                     for t in ("jobs", "datasets", "artifacts"))


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def make_tgz(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return buf.getvalue()


GOOD = {f"{s}/{c}/{i}.png": png() for s in ("train", "val") for c in ("a", "b") for i in range(2)}


def job_cases(data: str) -> list:
    """(label, body, status, field) for a submission that must be refused; ``data`` is the service's dataset."""
    good = teacher_config(data)

    def teacher(**config) -> dict:
        return {"kind": "teacher", "name": "x", "config": {**good, **config}}

    def train(**values) -> dict:
        return teacher(train={**good["train"], **values})

    def data_paths(**values) -> dict:
        return teacher(data={**good["data"], **values})

    return [
        ("unknown config key", teacher(bogus=1), 400, "config.bogus"),
        ("unknown nested key", train(epochz=1), 400, "config.train.epochz"),
        ("wrong type", train(batch_size="32"), 400, "config.train.batch_size"),
        ("unknown body key", {"kind": "teacher", "name": "x", "config": good, "priority": 1}, 400, "priority"),
        ("missing name", {"kind": "teacher", "config": good}, 400, "name"),
        ("bad kind", {"kind": "student", "name": "x", "config": good}, 400, "kind"),
        ("missing dataset path", data_paths(train=f"{data}/nope"), 400, "config.data.train"),
        ("missing registered dataset", data_paths(val="dataset:nope/val"), 400, "config.data.val"),
        ("path traversal", data_paths(train=f"{data}/../../../etc"), 400, "config.data.train"),
        ("outside data roots", data_paths(train="/etc"), 400, "config.data.train"),
        ("distill without teacher", {"kind": "distill", "name": "x", "config": distill_config(data)}, 400,
         "config.teacher.checkpoint"),
        ("unknown artifact", {"kind": "distill", "name": "x", "config": distill_config(data, checkpoint=999999)}, 400,
         "config.teacher.checkpoint"),
        ("bad pipeline teacher", {"kind": "distill", "name": "x", "config": distill_config(data),
                                  "teacher_job": {"config": {**good, "train": {**good["train"], "lr": -1}}}}, 400,
         "teacher_job.config.train.lr"),
        ("seeds without a baseline", {"kind": "distill", "name": "x", "config": distill_config(data), "seeds": 2,
                                      "teacher_job": {"config": good}}, 400, "seeds"),
        ("too many seeds", {"kind": "distill", "name": "x", "config": distill_config(data), "seeds": 6, "baseline": True,
                            "teacher_job": {"config": good}}, 400, "seeds"),
    ]


JOB_CASE_LABELS = [case[0] for case in job_cases("/data")]


@pytest.mark.parametrize("label", JOB_CASE_LABELS)
def test_bad_job_submission(service, label):
    _, body, status, fieldname = next(c for c in job_cases(str(service.data)) if c[0] == label)
    before = counts(service)
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == fieldname, err
    assert err["code"] and err["message"]
    assert counts(service) == before


def test_bad_http_requests(service):
    before = counts(service)
    url = f"{service.url}/api/v1/jobs"
    cases = [
        ("no token", requests.post(url, json={}), 401, "Authorization"),
        ("bad token", requests.post(url, json={}, headers={"Authorization": "Bearer nope"}), 401, "Authorization"),
        ("malformed JSON", requests.post(url, data="{not json", headers={**service.h(), "Content-Type": "application/json"}),
         400, "body"),
        ("JSON array", requests.post(url, json=[1], headers=service.h()), 400, "body"),
        ("not JSON", requests.post(url, data="kind=teacher", headers={**service.h(), "Content-Type": "text/plain"}), 415, "body"),
        ("huge body", requests.post(url, data=json.dumps({"name": "x" * (2 << 20)}),
                                    headers={**service.h(), "Content-Type": "application/json"}), 413, "body"),
        ("bad filter", requests.get(url + "?state=bogus", headers=service.h()), 400, "state"),
        ("bad limit", requests.get(url + "?limit=0", headers=service.h()), 400, "limit"),
    ]
    for label, r, status, fieldname in cases:
        assert r.status_code == status, (label, r.status_code, r.text)
        assert r.json()["error"]["field"] == fieldname, (label, r.json())
    assert counts(service) == before


def test_other_users_job_is_404(service):
    r = service.api("POST", "/jobs", json={"kind": "teacher", "name": "mine",
                                           "config": teacher_config(str(service.data), epochs=200)})
    job_id = r.json()["id"]
    try:
        for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/metrics"),
                             ("GET", f"/jobs/{job_id}/logs"), ("POST", f"/jobs/{job_id}/cancel"),
                             ("POST", f"/jobs/{job_id}/retry")):
            r = service.api(method, path, user="bob")
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        assert job_id not in [j["id"] for j in service.api("GET", "/jobs", user="bob").json()["jobs"]]
        assert job_id in [j["id"] for j in service.api("GET", "/jobs", user="root").json()["jobs"]]  # admin
        assert service.api("GET", f"/jobs/{job_id}", user="root").status_code == 200
    finally:
        assert service.api("POST", f"/jobs/{job_id}/cancel").status_code == 202
        service.wait(job_id, timeout=120)


def test_list_filters_and_pagination(service):
    """Two jobs of this test's own (queued then cancelled) make sure there is a second page."""
    ids = []
    for i in range(2):
        r = service.api("POST", "/jobs", user="bob", json={"kind": "teacher", "name": f"page-{i}",
                                                          "config": teacher_config(str(service.data), epochs=200)})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    try:
        r = service.api("GET", "/jobs?limit=1&offset=0&kind=teacher", user="bob")
        body = r.json()
        assert r.status_code == 200 and set(body) >= {"jobs", "total", "limit", "offset", "next_offset", "next_cursor"}
        assert body["total"] >= 2 and len(body["jobs"]) == 1 and body["jobs"][0]["kind"] == "teacher"
        nxt = service.api("GET", f"/jobs?limit=1&offset={body['next_offset']}&kind=teacher", user="bob").json()
        assert nxt["jobs"][0]["id"] < body["jobs"][0]["id"]
        assert service.api("GET", "/jobs?kind=distill", user="bob").json()["jobs"] == []
    finally:
        for job_id in ids:
            service.api("POST", f"/jobs/{job_id}/cancel", user="bob")
        for job_id in ids:
            assert service.wait(job_id, user="bob", timeout=120)["state"] == "cancelled"


ARCHIVE_CASES = [
    ("zip traversal", "bad.zip", lambda: make_zip({**GOOD, "../evil.png": png()}), "escapes"),
    ("tar traversal", "bad.tar.gz", lambda: make_tgz({**GOOD, "train/../../evil.png": png()}), "escapes"),
    ("absolute member", "bad.tar.gz", lambda: make_tgz({**GOOD, "/tmp/evil.png": png()}), "absolute"),
    ("tar symlink", "bad.tar.gz", lambda: make_tgz(GOOD, symlink="train/a/link.png"), "link"),
    ("zip symlink", "bad.zip", lambda: make_zip(GOOD, symlink="train/a/link.png"), "link"),
    ("no val", "bad.zip", lambda: make_zip({k: v for k, v in GOOD.items() if k.startswith("train/")}), "val/"),
    ("undecodable image", "bad.zip", lambda: make_zip({**GOOD, "train/a/broken.png": b"not a png"}), "decodable"),
    ("not an archive", "bad.zip", lambda: b"hello", "archive"),
]


@pytest.mark.parametrize("label, filename, build, reason", ARCHIVE_CASES, ids=[c[0] for c in ARCHIVE_CASES])
def test_bad_dataset_archive(service, label, filename, build, reason):
    before = counts(service)
    storage = service.root / "storage" / "datasets"
    name = "bad-" + label.replace(" ", "-")
    r = service.api("POST", "/datasets", files={"file": (filename, build())}, data={"name": name})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["field"] == "file" and reason in err["message"], err
    assert counts(service) == before
    assert storage.is_dir(), "the service creates its storage folders at start"
    assert not (storage / name).exists()
    assert not list(storage.glob(".upload.*")), "the upload's temp folder was left behind"
    assert not (service.root / "evil.png").exists() and not (service.root / "storage" / "evil.png").exists()


DATASET_PATH_CASES = [  # (label, body with {data} for the service's dataset, field)
    ("traversal", {"name": "x", "path": "{data}/../../.."}, "path"),
    ("outside the roots", {"name": "x", "path": "/etc"}, "path"),
    ("no train/ inside", {"name": "x", "path": "{data}/train"}, "path"),
    ("bad name", {"name": "../x", "path": "{data}"}, "name"),
    ("unknown key", {"name": "x", "path": "{data}", "extra": 1}, "extra"),
]


@pytest.mark.parametrize("label, body, fieldname", DATASET_PATH_CASES, ids=[c[0] for c in DATASET_PATH_CASES])
def test_bad_dataset_path(service, label, body, fieldname):
    before = counts(service)
    body = {k: v.format(data=service.data) if isinstance(v, str) else v for k, v in body.items()}
    r = service.api("POST", "/datasets", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == fieldname, r.json()
    assert counts(service) == before


def test_good_archive_and_path_registration(service):
    r = service.api("POST", "/datasets", files={"file": ("ok.tar.gz", make_tgz(GOOD))}, data={"name": "tiny-upload"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["num_classes"] == 2 and ds["num_train"] == 4 and ds["num_val"] == 4 and ds["source"] == "upload"
    r = service.api("POST", "/datasets", json={"name": "digits-small", "path": str(service.data)})
    assert r.status_code == 201, r.text
    assert service.api("POST", "/datasets", json={"name": "digits-small", "path": str(service.data)}).status_code == 409
    names = [d["name"] for d in service.api("GET", "/datasets").json()["datasets"]]
    assert {"tiny-upload", "digits-small"} <= set(names)
    assert "digits-small" not in [d["name"] for d in service.api("GET", "/datasets", user="bob").json()["datasets"]]


def test_health_openapi_metrics(service):
    r = requests.get(f"{service.url}/api/v1/health")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "broker": "ok"}
    doc = requests.get(f"{service.url}/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/jobs/{job_id}/cancel" in doc["paths"]
    assert "teacher_job" in doc["components"]["schemas"]["JobSubmit"]["properties"]
    assert requests.get(f"{service.url}/metrics").status_code == 401  # DISTILLERY_METRICS=admin by default
    text = requests.get(f"{service.url}/metrics", headers=service.h("root")).text
    assert 'distillery_jobs{state="queued"}' in text


def test_keyset_pagination(service):
    ids = [service.api("POST", "/datasets", json={"name": f"page-{i}", "path": str(service.data)}).json()["id"]
           for i in range(3)]
    first = service.api("GET", "/datasets?limit=2").json()
    assert [d["id"] for d in first["datasets"]] == sorted(ids, reverse=True)[:2] and first["next_cursor"] == ids[1]
    second = service.api("GET", f"/datasets?limit=2&cursor={first['next_cursor']}").json()
    assert second["datasets"][0]["id"] == ids[0]


def test_every_config_problem_in_one_400(service):
    """Three problems in the config and one in the pipeline's teacher config: one 400 lists them all,
    each naming its field (did you mean for a typo, timm's parser for train.aa); field/message stay the first's."""
    good = teacher_config(str(service.data))
    config = {**distill_config(str(service.data)), "train": {**good["train"], "epochz": 2, "aa": "rand-m9-mstd0.5-incl"},
              "distillation": {"type": "sfot"}}
    config["teacher"] = {"model": good["teacher"]["model"]}
    body = {"kind": "distill", "name": "x", "config": config,
            "teacher_job": {"config": {**good, "train": {**good["train"], "lr": -1}}}}
    before = counts(service)
    r = service.api("POST", "/jobs", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    got = {e["field"]: e["message"] for e in err["errors"]}
    assert got["teacher_job.config.train.lr"].startswith("must be > 0")
    assert got["config.train.epochz"] == "unknown key; did you mean epochs?"
    assert got["config.distillation.type"].endswith("did you mean soft?")
    assert "ignore section 'incl'" in got["config.train.aa"]
    assert {"field": err["field"], "message": err["message"]} == err["errors"][0]
    assert counts(service) == before


def test_top_level_typo_is_named_with_its_close_key(service):
    r = service.api("POST", "/jobs", json={"kind": "teacher", "name": "x", "confg": teacher_config(str(service.data))})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["field"], err["message"]) == ("confg", "unknown key; did you mean config?")
    assert {"field": "config", "message": "is required"} in err["errors"]
