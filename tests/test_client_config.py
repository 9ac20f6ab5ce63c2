"""From the demo to the command-line client without copying anything: the saved client settings
(distillery.api_client), `distillery login`/`logout`, and the admin commands from any folder."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from distillery import api_client as client_config


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh HOME with no DISTILLERY_* or XDG_CONFIG_HOME: only what a test writes is there."""
    for k in [k for k in os.environ if k.startswith("DISTILLERY_")] + ["XDG_CONFIG_HOME"]:
        monkeypatch.delenv(k, raising=False)
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def test_written_atomically_owner_only_and_read_back(home):
    path = client_config.write_client_config({"url": "http://h:1", "token": "t"})
    assert path == home / ".config" / "distillery" / "client.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]  # no temporary file left
    assert client_config.read_client_config() == {"url": "http://h:1", "token": "t"}
    assert client_config.config_path({"XDG_CONFIG_HOME": "/x", "HOME": "/h"}) == Path("/x/distillery/client.json")
    assert client_config.remove_client_config() == path and client_config.read_client_config() == {}


def test_precedence_flags_env_file_and_the_token_stays_with_its_url(home, monkeypatch):
    client_config.write_client_config({"url": "http://saved:1", "token": "saved-token"})
    assert client_config.connection(None, None) == ("http://saved:1", "saved-token")
    assert client_config.connection("http://other:2", None) == ("http://other:2", None)  # never sent elsewhere
    monkeypatch.setenv("DISTILLERY_TOKEN", "env-token")
    assert client_config.connection(None, None) == ("http://saved:1", "env-token")
    assert client_config.connection(None, "flag") == ("http://saved:1", "flag")


def cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "distillery", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def test_demo_start_makes_the_client_work_from_any_folder(home, tmp_path, monkeypatch, capsys):
    """The demo's start (the service up, the client's settings saved, the token shown) and then, from
    another folder with only HOME in common: `distillery jobs`, `token create`, `logout`, `login`."""
    from server import demo

    deploy, elsewhere = tmp_path / "deploy", tmp_path / "elsewhere"
    deploy.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(deploy)
    url, proc, token = demo.start_service()
    try:
        demo.announce(url, token)
        out = capsys.readouterr().out
        assert f"log in with this token: {token}" in out and "jobs" in out
        saved = json.loads(client_config.config_path().read_text())
        assert saved == {"url": url, "token": token, "home": str(deploy / "var")}

        assert cli("jobs", cwd=elsewhere).stdout == "no jobs\n"  # URL and token from the file
        made = cli("token", "create", "--user", "bob", cwd=elsewhere).stdout.strip().splitlines()[-1]
        assert made.startswith("dst_")  # the demo's database, found from its recorded state folder

        cli("logout", cwd=elsewhere)
        assert cli("jobs", cwd=elsewhere, check=False).returncode != 0  # 127.0.0.1:8000: nobody there
        bad = cli("login", url, "nope", cwd=elsewhere, check=False)
        assert bad.returncode == 5 and not client_config.config_path().exists()  # a wrong token is not saved
        cli("login", url, made, cwd=elsewhere)
        assert cli("jobs", cwd=elsewhere).stdout == "no jobs\n"
        upload_and_list(elsewhere)
    finally:
        demo.stop_service(proc)


def upload_and_list(cwd: Path) -> None:
    """`datasets upload` of a folder (packed and streamed) and of an archive file, then `datasets list`."""
    from PIL import Image

    folder = cwd / "tiny"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 50, 20, 30)).save(folder / split / cls / f"{i}.png")
    out = cli("datasets", "upload", str(folder), "--name", "tiny", cwd=cwd).stdout
    assert "2 classes, 4 training and 4 validation images" in out and "dataset:tiny/train" in out
    import tarfile

    with tarfile.open(cwd / "tiny.tgz", "w:gz") as tf:
        for child in folder.iterdir():
            tf.add(child, arcname=child.name)
    cli("datasets", "upload", str(cwd / "tiny.tgz"), "--name", "tiny2", cwd=cwd)
    bad = cli("datasets", "upload", str(cwd / "nothing"), "--name", "x", cwd=cwd, check=False)
    assert bad.returncode == 4 and "give a dataset folder" in bad.stderr
    rows = cli("datasets", "list", cwd=cwd).stdout.splitlines()
    assert rows[0].split()[:5] == ["id", "name", "classes", "train", "val"]
    assert {r.split()[1] for r in rows[1:]} == {"tiny", "tiny2"}


def test_admin_command_without_a_deployment_says_where_it_looked(home, tmp_path):
    r = cli("token", "create", "--user", "x", cwd=tmp_path, check=False)
    assert r.returncode == 2
    assert "no database at" in r.stderr and "DISTILLERY_HOME" in r.stderr


def test_distillery_home_moves_every_embedded_default(tmp_path):
    from server.settings import Settings

    st = Settings.from_env({"DISTILLERY_HOME": str(tmp_path)})
    assert st.sqlite_file == tmp_path / "distillery.db"
    assert (st.storage_path, Path(st.broker_dir), st.secret_key_file) == (
        tmp_path / "storage", tmp_path / "broker", tmp_path / "secret_key")
    assert st.allowed_data_roots[0] == tmp_path
    alone = Settings.from_env({"DISTILLERY_HOME": str(tmp_path), "DISTILLERY_STORAGE": "/elsewhere"})
    assert alone.storage == "/elsewhere" and alone.sqlite_file == tmp_path / "distillery.db"
    assert Settings.from_env({}).database_url == Settings().database_url  # unset: ./var as before
