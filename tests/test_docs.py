"""The README and the documentation site stay short, linked and complete.

The README had grown to 1,643 lines that contradicted themselves and the code; it is now a page for
the user (at most 200 lines) pointing into docs/. These tests keep it so: every relative link in the
README and the docs resolves to a file of the repository, every ``DISTILLERY_*`` variable the code
reads is named in the docs, and the generated pages (settings, job config, REST) are their
generators' output. Each check is a function first tried on a broken input, so it is known to fail.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from server import docs_generate, settings_doc
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
PRODUCT_PACKAGES = ("deit_core", "server", "worker", "distillery")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_ENV = re.compile(r"DISTILLERY_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def links(text: str) -> list[str]:
    """Link and image targets of a Markdown text, outside code blocks and code spans."""
    return _LINK.findall(_CODE.sub("", _FENCE.sub("", text)))


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    """``file: target`` for each relative link that is not a file inside ``root`` (URLs and
    same-page anchors are not relative links; ``page.md#anchor`` must name an existing page)."""
    out = []
    for f in files:
        for target in links(f.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (f.parent / target.split("#", 1)[0]).resolve()
            if target.startswith("/") or not path.is_file() or not path.is_relative_to(root.resolve()):
                out.append(f"{f.relative_to(root)}: {target}")
    return out


def env_variables_read(root: Path = ROOT) -> set[str]:
    """Every ``DISTILLERY_*`` variable the product reads: ``Settings.from_env``'s and any other
    (``distillery serve``'s host and port, the client's URL and token) found in its source."""
    names = set(settings_doc.env_names(Settings).values())
    for package in PRODUCT_PACKAGES:
        for path in (root / package).rglob("*.py"):
            names.update(_ENV.findall(path.read_text()))
    return names


def unnamed(variables: set[str], files: list[Path]) -> list[str]:
    text = "\n".join(f.read_text() for f in files)
    return sorted(v for v in variables if not re.search(rf"\b{v}\b", text))


# ---------------------------------------------------------------------------------------- README


def test_the_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_says_how_to_reach_the_docs_and_the_cli():
    readme = (ROOT / "README.md").read_text()
    for needle in ("make demo", "make test", "source .venv/bin/activate", ".venv/bin/distillery", "docs/index.md",
                   "## After the demo", "## Your first job on your own data"):
        assert needle in readme, needle


# ----------------------------------------------------------------------------------------- links


def test_links_skip_code_and_find_images_and_anchored_pages():
    text = "[a](docs/x.md#part) ![img](docs/y.png)\n`[no](code.md)`\n```\n[no](fenced.md)\n```\n[web](https://e.org)"
    assert links(text) == ["docs/x.md#part", "docs/y.png", "https://e.org"]


def test_a_broken_or_outside_link_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "real.md").write_text("# real\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/real.md#real) [gone](docs/gone.md) [out](../elsewhere.md) [abs](/etc/passwd) "
                    "[url](https://example.org/x.md) [here](#top)\n")
    (tmp_path.parent / "elsewhere.md").write_text("outside the repository\n")
    assert broken_links([page], tmp_path) == ["README.md: docs/gone.md", "README.md: ../elsewhere.md", "README.md: /etc/passwd"]


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    files = doc_files()
    assert len(files) > 10
    assert broken_links(files) == []


# -------------------------------------------------------------------------------------- settings


def test_a_setting_missing_from_the_docs_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`DISTILLERY_STORAGE` and DISTILLERY_MAX_JSON_BYTES\n")
    assert unnamed({"DISTILLERY_STORAGE", "DISTILLERY_MAX_JSON", "DISTILLERY_STATE_DIR"}, [page]) == [
        "DISTILLERY_MAX_JSON", "DISTILLERY_STATE_DIR"]


def test_the_docs_name_every_distillery_variable_the_code_reads():
    variables = env_variables_read()
    assert {"DISTILLERY_STATE_DIR", "DISTILLERY_MAX_ARCHIVE_FILES", "DISTILLERY_PORT", "DISTILLERY_TOKEN"} <= variables
    assert unnamed(variables, doc_files()) == []


def test_the_settings_page_has_a_row_per_field_with_its_default_from_the_code():
    page = (ROOT / "docs" / "configuration.md").read_text()
    for name, env in settings_doc.env_names(Settings).items():
        assert page.count(f"| `{env}` | `{name}` |") == 1, env
    assert "| `DISTILLERY_MAX_ARCHIVE_FILES` | `max_archive_files` | `50000` |" in page
    assert "| `DISTILLERY_MAX_JSON_BYTES` | `max_json_bytes` | 1 MiB (`1048576`) |" in page


def test_a_settings_field_without_its_docstring_line_is_refused():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Partial:
        """Settings of a test.

        Attributes:
            alpha / beta: two settings
                described together.
        """

        alpha: int = 1
        beta: str = ""
        gamma: float = 0.5

        @classmethod
        def from_env(cls, env):
            return cls(alpha=int(env.get("DISTILLERY_ALPHA", 1)), gamma=float(env.get("DISTILLERY_GAMMA", 0.5)))

    assert settings_doc.docstring_lines(Partial) == {"alpha": "two settings described together.",
                                                     "beta": "two settings described together."}
    assert settings_doc.env_names(Partial) == {"alpha": "DISTILLERY_ALPHA", "gamma": "DISTILLERY_GAMMA"}
    with pytest.raises(settings_doc.UndocumentedSetting, match="gamma"):
        settings_doc.rows(Partial)


# ------------------------------------------------------------------------------- generated pages


@pytest.mark.parametrize("page", sorted(docs_generate.PAGES))
def test_the_generated_page_is_its_generators_output(page):
    text = (ROOT / page).read_text()
    assert text == docs_generate.PAGES[page](), f"{page} is stale: run `{docs_generate.COMMAND}`"


def test_a_stale_page_is_found_and_rewritten(tmp_path):
    for page in docs_generate.PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text((ROOT / page).read_text())
    (tmp_path / "docs" / "rest.md").write_text("# REST reference\n\nedited by hand\n")
    assert docs_generate.stale(tmp_path) == ["docs/rest.md"]
    assert docs_generate.write(tmp_path) == ["docs/rest.md"]
    assert docs_generate.stale(tmp_path) == []
    assert [p.name for p in (tmp_path / "docs").iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_the_rest_page_lists_every_operation_of_the_openapi_document():
    from server.api.openapi import build_openapi

    page = (ROOT / "docs" / "rest.md").read_text()
    doc = build_openapi(Settings())
    for path, ops in doc["paths"].items():
        for method in ops:
            assert f"### `{method.upper()} /api/v1{path}`" in page, (method, path)
    for name in doc["components"]["schemas"]:
        assert f"\n### {name}\n" in page, name


# ------------------------------------------------------------------------------ the examples run


def job_file_examples(text: str) -> list[str]:
    """The YAML job files a page shows (fenced blocks that start with ``# <name>.yaml``)."""
    blocks = re.findall(r"^ *```yaml\n(.*?)^ *```", text, re.M | re.S)
    return [b for b in blocks if re.match(r"\s*# \S+\.yaml\n", b)]


@pytest.fixture(scope="module")
def flowers_api(tmp_path_factory):
    """(test client, bearer headers) of the real app with a small ImageFolder registered as 'flowers'."""
    from PIL import Image

    from server.app import create_app
    from server.auth import create_token
    from server.migrate import upgrade

    tmp = tmp_path_factory.mktemp("docs_examples")
    for split in ("train", "val"):
        for cls, colour in (("daisy", "white"), ("rose", "red")):
            folder = tmp / "data" / "flowers" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
    upgrade(f"sqlite:///{tmp}/db.sqlite")
    st = Settings(database_url=f"sqlite:///{tmp}/db.sqlite", storage=str(tmp / "storage"), broker_dir=str(tmp / "broker"),
                  state_dir=str(tmp / "state"), data_roots=(str(tmp / "data"),))
    st.ensure_dirs()
    app = create_app(st)
    with app.app_context():
        token = create_token(app.extensions["distillery.db"].scoped(), "ada")
    client, h = app.test_client(), {"Authorization": f"Bearer {token}"}
    r = client.post("/api/v1/datasets", json={"name": "flowers", "path": str(tmp / "data" / "flowers")}, headers=h)
    assert r.status_code == 201, r.get_json()
    return client, h


@pytest.mark.parametrize("page", ["README.md", "docs/own-data.md"])
def test_the_first_job_file_a_page_shows_is_accepted_by_the_service(page, flowers_api, tmp_path):
    from distillery.job_files import load_job_file

    examples = job_file_examples((ROOT / page).read_text())
    assert examples, f"{page} shows no job file"
    client, h = flowers_api
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(example)
        r = client.post("/api/v1/jobs", json=load_job_file(str(path)), headers=h)
        assert r.status_code == 201, (page, r.get_json())
        assert len(r.get_json()["pipeline"]) >= 2  # the teacher, then the student


def test_a_job_file_the_service_refuses_is_seen(flowers_api, tmp_path):
    client, h = flowers_api
    bad = job_file_examples("```yaml\n# bad.yaml\nkind: distill\nconfig: {data: {train: 'dataset:nope/train'}}\n```\n")
    path = tmp_path / "bad.yaml"
    path.write_text(bad[0])
    from distillery.job_files import load_job_file

    assert client.post("/api/v1/jobs", json=load_job_file(str(path)), headers=h).status_code == 400
