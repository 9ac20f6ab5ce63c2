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


# ---------------------------------------------------------------------------------------------
# The gain, latency and ship card in text (distillery.card_text), on crafted job JSON
# ---------------------------------------------------------------------------------------------
def test_gain_line_has_its_interval_and_verdict_or_says_none_was_computed():
    from distillery.card_text import gain_line

    one_seed = {"job_id": 5, "state": "succeeded", "top1": 77.6, "gain": 0.3, "gain_ci95": [-2.3, 2.8], "ci_over": "images",
                "seeds": 1, "significant": False,
                "verdict": "no measurable difference (95% CI -2.3 to +2.8 pt, McNemar p = 1.0); "
                           "training noise not measured: run seeds: 3"}
    assert gain_line(one_seed) == ("distillation gain +0.3 pt (95% CI -2.3 to +2.8 pt, over images, one seed): "
                                   + one_seed["verdict"])
    old = {"job_id": 5, "state": "succeeded", "top1": 77.6, "gain": 1.6}
    assert gain_line(old, 79.2) == ("top-1 79.2% against 77.6% for the same student without a teacher (job 5; "
                                    "interval not computed)")
    assert gain_line({"job_id": 5, "state": "running", "top1": None, "gain": None}) == (
        "distillation gain: waiting for both runs (baseline job 5 running)")
    assert gain_line({"job_id": 5, "pending": "waiting for 3 of 6 runs"}) == "distillation gain: waiting for 3 of 6 runs"
    assert gain_line(None) is None


def test_at_chance_is_a_state_of_its_own_in_jobs_and_watch():
    from distillery.card_text import state_text

    job = {"id": 9, "state": "succeeded", "at_chance": True, "top1": 10.2, "chance_top1": 10.0, "progress": {}, "metrics": {}}
    assert state_text(job) == "at chance" and state_text({**job, "at_chance": False}) == "succeeded"
    assert client.progress_line(job).startswith("job 9 at chance")


def test_ship_card_text_names_the_cpu_spread_and_teacher_fitness():
    from distillery.card_text import latency_text, ship_card_text

    card = {"sentence": "the distilled student is 3.9x smaller and 2.7x faster than its teacher, 1.8 pt below it",
            "cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+", "isa": ["avx2", "avx512f", "amx_tile"], "threads": 1},
            "rows": [{"role": "teacher", "job_id": 1, "model": "regnety_160", "params_m": 20.9, "top1": 81.0,
                      "top1_ci95": [76.6, 84.8], "latency_ms": {"p50": 13.5, "p10": 13.0, "p90": 14.2}, "size_bytes": 21_450_000,
                      "teacher_train_top1": 80.0, "fitness_warning": "the teacher is right on only 80.0% of ..."},
                     {"role": "student", "job_id": 2, "model": "deit_tiny", "params_m": 5.5, "top1": 79.2,
                      "top1_ci95": [74.7, 83.1], "latency_ms": {"p50": 5.0, "p10": 4.8, "p90": 5.4}, "size_bytes": 5_500_000}]}
    text = ship_card_text(card)
    assert text.splitlines()[0] == card["sentence"]
    assert "13.50 ms (13.00-14.20)" in text and "79.2 (74.7-83.1)" in text and "80.0 on training crops" in text
    assert "Intel(R) Xeon(R) Platinum 8480+ (avx2, avx512f, amx_tile), 1 thread" in text
    assert "warning: teacher: the teacher is right on only 80.0%" in text
    assert ship_card_text(None) is None and latency_text({"p50": 1.5}) == "1.50 ms" and latency_text(None) == "-"


def test_job_file_with_a_misspelt_body_key_is_sent_as_a_body(tmp_path):
    """``confg:`` next to ``name:`` is a body with a typo, not a config with an unknown ``name`` key."""
    f = tmp_path / "job.yaml"
    f.write_text("kind: teacher\nname: t\nconfg: {data: {train: a, val: b}}\n")
    assert job_files.load_job_file(str(f)) == {"kind": "teacher", "name": "t", "confg": {"data": {"train": "a", "val": "b"}}}
    f.write_text("kind: teacher\ndat: {train: a}\n")  # a section's near miss: still a config, the server names config.dat
    assert job_files.load_job_file(str(f))["config"] == {"kind": "teacher", "dat": {"train": "a"}}
    f.write_text("kind: teacher\nname: t\nseeds: 1\ndata: {train: a}\n")  # a config with body keys beside it
    assert job_files.load_job_file(str(f)) == {"kind": "teacher", "name": "t", "seeds": 1,
                                               "config": {"kind": "teacher", "data": {"train": "a"}}}


class _ErrorResponse:
    status_code, reason = 400, "Bad Request"

    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


def test_client_prints_every_config_problem():
    errors = [{"field": "config.train.epochz", "message": "unknown key; did you mean epochs?"},
              {"field": "config.train.lr", "message": "must be > 0.0, got -1.0"}]
    e = api_client._error_from_response(_ErrorResponse({"error": {"code": "invalid_config", **errors[0], "errors": errors}}),
                                        "jobs")
    assert e.message.splitlines() == ["HTTP 400: 2 problems:", "  config.train.epochz: unknown key; did you mean epochs?",
                                      "  config.train.lr: must be > 0.0, got -1.0"]
    one = api_client._error_from_response(_ErrorResponse({"error": {"field": "name", "message": "is required"}}), "jobs")
    assert one.message == "HTTP 400: name: is required"


class _ReportClient:
    """A succeeded job with a .ptl and the export report the exporter writes when given --no-pte."""

    report = {"skipped": ["model.pte: --no-pte given", "int8: something else"]}

    def get(self, path, stream=False, **kw):
        if stream:
            import json

            return _Resp(json.dumps(self.report).encode(), None)
        return {"id": 2, "state": "succeeded", "artifacts": [{"id": 5, "format": "ptl"}, {"id": 6, "format": "report"}]}


def test_missing_artifact_says_why_from_the_export_report(tmp_path):
    with pytest.raises(api_client.ClientError) as e:
        artifact_download.download_artifact(_ReportClient(), 2, "pte", str(tmp_path / "m.pte"))
    assert e.value.message.startswith("job 2 has no pte artifact: its export ran with --no-pte (the service's "
                                      "DISTILLERY_EXPORT_ARGS")
    assert e.value.exit_code == api_client.EXIT_NOT_FOUND
    quiet = _ReportClient()
    quiet.report = {"skipped": []}
    assert artifact_download.missing_reason(quiet, quiet.get("/jobs/2"), "pte") == "its export report does not say why"


def test_watch_on_a_sweep_speaks_of_trials():
    sweep = {"id": 9, "kind": "sweep", "state": "succeeded", "top1": 91.0, "progress": {"fraction": 1.0},
             "sweep": {"finished": 8, "trials_requested": 8, "best": {"number": 3, "job_id": 14, "top1": 91.0}}}
    line = client.progress_line(sweep, width=10)
    assert line.startswith("sweep 9 ") and "trials 8/8" in line and "best trial 3 top-1 91.00" in line
    assert "epoch" not in line
    lines = client.outcome_lines(sweep)
    assert lines[0].startswith("best trial 3 (job 14): top-1 91.0%")
    assert not any("the one exported" in x for x in lines)
