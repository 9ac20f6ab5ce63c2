"""Client pieces that need no server: job files, progress lines, a corrupted download, config diffs."""
from __future__ import annotations

import hashlib

import pytest

from distillery import api_client, artifact_download, client, job_files


def test_job_file_bare_config_or_full_body(tmp_path):
    bare = tmp_path / "digits.yaml"
    bare.write_text("kind: teacher\ndata: {train: a, val: b}\n")
    assert job_files.load_job_file(str(bare)) == {"kind": "teacher", "name": "digits",
                                               "config": {"kind": "teacher", "data": {"train": "a", "val": "b"}}}
    assert job_files.load_job_file(str(bare), name="x")["name"] == "x"
    full = tmp_path / "job.json"
    full.write_text('{"kind": "distill", "name": "n", "config": {"data": {}}}')
    assert job_files.load_job_file(str(full)) == {"kind": "distill", "name": "n", "config": {"data": {}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(api_client.ClientError, match="not valid YAML"):
        job_files.load_job_file(str(bad))


def test_progress_line():
    job = {"id": 7, "state": "running", "progress": {"epoch": 3, "epochs": 30, "fraction": 0.09, "eta_s": 410},
           "metrics": {"loss": 1.23456, "val_top1": 88.1}}
    line = client.progress_line(job, width=10)
    assert "[#---------]" in line and "9.0%" in line and "epoch 3/30" in line
    assert "loss 1.2346" in line and "top-1 88.10" in line and "ETA 6m50s" in line


class _Resp:
    def __init__(self, data: bytes, etag: str | None):
        self.data, self.headers = data, ({"ETag": etag} if etag else {})

    def iter_content(self, chunk_size):
        yield self.data

    def close(self):
        pass


class _Client:
    def __init__(self, art_sha: str, data: bytes, etag: str | None = None):
        self.art_sha, self.data, self.etag = art_sha, data, etag

    def get(self, path, stream=False, **kw):
        if stream:
            return _Resp(self.data, self.etag)
        return {"id": 1, "state": "succeeded", "artifacts": [{"id": 5, "format": "ptl", "sha256": self.art_sha}]}


def test_download_refuses_bytes_that_do_not_match(tmp_path):
    target = tmp_path / "m.ptl"
    with pytest.raises(api_client.ClientError) as e:
        artifact_download.download_artifact(_Client("0" * 64, b"corrupted"), 1, "ptl", str(target))
    assert e.value.exit_code == api_client.EXIT_CHECKSUM
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left

    good = b"model bytes"
    sha = hashlib.sha256(good).hexdigest()
    path, got, size = artifact_download.download_artifact(_Client(sha, good, etag=f'"{sha}"'), 1, "ptl", str(target))
    assert (path, got, size) == (target, sha, len(good)) and target.read_bytes() == good


def test_config_diff_names_only_what_differs():
    a = {"kind": "distill", "train": {"lr": 1e-3, "epochs": 30}, "distillation": {"type": "hard"}}
    b = {"kind": "distill", "train": {"lr": 2e-3, "epochs": 30}, "distillation": {"type": "soft", "tau": 3.0}}
    differ, same = client.config_diff([a, b])
    assert differ == [("distillation.tau", ["(absent)", 3.0]), ("distillation.type", ["hard", "soft"]),
                      ("train.lr", [1e-3, 2e-3])]
    assert same == 2  # kind, train.epochs
    assert client.config_diff([a, a]) == ([], 4)


def test_job_and_sweep_commands_share_the_connection_arguments_and_the_error_guard(capsys):
    """cli.py wires both command modules; each answers an unreachable server with one line and exit 7."""
    import socket

    from distillery.cli import build_parser

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    parser = build_parser()
    for argv in (["jobs", "--limit", "5"], ["sweep", "watch", "3"], ["sweep", "download", "3", "--front"]):
        args = parser.parse_args([*argv, "--url", url, "--token", "t"])
        assert (args.url, args.token) == (url, "t")
        assert args.func(args) == api_client.EXIT_UNREACHABLE, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot reach the distillery server at {url}") and err.count("\n") == 1, err
