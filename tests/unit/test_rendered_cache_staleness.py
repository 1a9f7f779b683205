"""The rendered files kept between runs (`wiring.open_render_cache`) follow every input of a
render: change one behind the cache's back and the next run renders anew.

Each test renders through a `Renderer` backed by the disk cache, saves it as a command
does at its end, changes one input the way a user would, and renders again with a fresh
renderer and cache object (the next command) over the same directory.
"""

from __future__ import annotations

import marshal
from pathlib import Path

import pytest

from configcenter.adapters.rendered_cache import RenderedFilesCache
from configcenter.core.errors import ConfigError
from configcenter.core.render import Renderer, RenderError
from configcenter.usecases.inspect import validate
from configcenter.usecases.workspace import Workspace
from tests.support.configrepo import ConfigRepo


class Runs:
    """Commands one after the other over one cache directory; counts the real renders."""

    def __init__(self, repo: ConfigRepo, directory: Path, engine: str = "engine-1") -> None:
        self.repo = repo
        self.directory = directory
        self.engine = engine
        self.rendered = 0

    def files(self, service: str = "api", env: str = "dev", image: str = "img:1") -> dict:
        cache = RenderedFilesCache(self.directory, self.engine)
        renderer = Renderer(rendered_records=cache)
        config = self.repo.load()
        before = renderer.shared_compile.served
        try:
            rendered = renderer.render(config, config.environment(env).services[service], image)
        finally:
            cache.save()
        # A render compiles its templates (through the shared compile); a kept one does not.
        self.rendered += renderer.shared_compile.served > before
        return rendered.files


@pytest.fixture
def runs(repo: ConfigRepo, tmp_path: Path) -> Runs:
    repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\n")
    return Runs(repo, tmp_path / "rendered")


def test_unchanged_inputs_are_not_rendered_again(runs: Runs) -> None:
    first = runs.files()
    assert runs.files() == first
    assert runs.rendered == 1


def test_a_value_edited_behind_the_cache_renders_anew(runs: Runs, repo: ConfigRepo) -> None:
    assert b"LOG_LEVEL=debug" in runs.files()["app.env"]
    dev = repo.read("environments/dev/_env.yaml")
    repo.write("environments/dev/_env.yaml", dev.replace("LOG_LEVEL: debug", "LOG_LEVEL: warn"))
    assert b"LOG_LEVEL=warn" in runs.files()["app.env"]
    # Back to the first value: the first record is still right.
    repo.write("environments/dev/_env.yaml", dev)
    assert b"LOG_LEVEL=debug" in runs.files()["app.env"]
    assert runs.rendered == 2


def test_a_template_edited_in_the_work_tree_renders_anew(runs: Runs, repo: ConfigRepo) -> None:
    runs.files()
    repo.write("templates/api/app.env.j2", "EDITED={{ LOG_LEVEL }}\n")
    assert runs.files()["app.env"] == b"EDITED=debug\n"
    # An included file is part of the template's tree too.
    repo.write("templates/api/app.env.j2", "{% include 'part.j2' %}")
    repo.write("templates/api/part.j2", "PART=1\n")
    assert runs.files()["app.env"] == b"PART=1\n"
    repo.write("templates/api/part.j2", "PART=2\n")
    assert runs.files()["app.env"] == b"PART=2\n"


def test_image_replicas_and_platform_settings_are_inputs(runs: Runs, repo: ConfigRepo) -> None:
    assert b"image: img:1" in runs.files()["deployment.yaml"]
    assert b"image: img:2" in runs.files(image="img:2")["deployment.yaml"]
    repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\nreplicas: 7\n")
    assert b"replicas: 7" in runs.files()["deployment.yaml"]
    project = repo.read("configcenter.yaml")
    repo.write("configcenter.yaml", project.replace('"shop-{{ env }}"', '"other-{{ env }}"'))
    assert b"namespace: other-dev" in runs.files()["deployment.yaml"]


def test_a_secret_and_the_same_text_as_a_plain_value_are_other_inputs(
    runs: Runs, repo: ConfigRepo
) -> None:
    """A plain string that reads like a secret reference renders alike, but the secret check
    of the rendered files differs: they must not share a record."""
    repo.write(
        "environments/dev/api.yaml",
        "template: HEAD\nimage: {ref: x}\n"
        'values: {DB_PASSWORD: "${secret:env:SHOP_DB_PASSWORD}"}\n',
    )
    plain = runs.files()
    repo.write(
        "environments/dev/api.yaml",
        "template: HEAD\nimage: {ref: x}\nvalues: {DB_PASSWORD: {secret: env:SHOP_DB_PASSWORD}}\n",
    )
    assert runs.files() == plain
    assert runs.rendered == 2


def test_another_engine_renders_anew(runs: Runs) -> None:
    runs.files()
    runs.engine = "engine-2"  # another configcenter, Jinja or Python
    runs.files()
    assert runs.rendered == 2
    assert [p.name for p in runs.directory.iterdir()] == ["engine-2"]


def test_templates_that_answer_differently_each_time_are_not_kept(
    runs: Runs, repo: ConfigRepo
) -> None:
    repo.write("templates/api/app.env.j2", "PICK={{ ['a', 'b'] | random }}\n{{ lipsum(1) }}\n")
    runs.files()
    runs.files()
    assert runs.rendered == 2
    repo.write("templates/api/app.env.j2", "LIPSUM={{ lipsum(1, html=False) }}\n")
    runs.files()
    runs.files()
    assert runs.rendered == 4


def test_a_failed_render_is_not_kept(runs: Runs, repo: ConfigRepo) -> None:
    repo.write("templates/api/app.env.j2", "X={{ NOT_A_VALUE }}\n")
    for _ in range(2):
        with pytest.raises(RenderError, match="'NOT_A_VALUE' is undefined"):
            runs.files()


def test_an_unreadable_pack_is_rendered_anew(runs: Runs) -> None:
    first = runs.files()
    (pack,) = (runs.directory / runs.engine).iterdir()
    pack.write_bytes(b"\x00not a pack")
    assert runs.files() == first
    assert runs.rendered == 2


def test_validate_reports_an_error_of_a_service_it_kept_before(repo: ConfigRepo) -> None:
    """validate renders through the kept files: an input broken after a clean run is reported."""
    repo.write("environments/dev/api.yaml", "template: HEAD\nimage: {ref: x}\n")
    ws = Workspace(repo.root)
    assert validate(ws).renders == 4
    ws.save_caches()
    repo.write("templates/api/app.env.j2", "LOG_LEVEL={{ LOG_LEVEL }}\nX={{ NOPE }}\n")
    with pytest.raises(ConfigError) as caught:
        validate(Workspace(repo.root))
    (problem,) = caught.value.problems
    assert (problem.source.file, problem.source.line) == ("templates/api/app.env.j2", 2)


def test_the_workspace_keeps_rendered_files_under_the_cache_home(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    ws = Workspace(repo.root)
    validate(ws)
    ws.save_caches()
    (engine,) = (tmp_path / "cache/configcenter/rendered").iterdir()
    assert len(list(engine.iterdir())) == 2  # one pack per environment: shop/dev, shop/prod


def test_a_pack_holding_something_else_is_rendered_anew(runs: Runs) -> None:
    """A pack that loads but does not hold files by name (written by something else)."""
    first = runs.files()
    (pack,) = (runs.directory / runs.engine).iterdir()
    kept = marshal.loads(pack.read_bytes())
    pack.write_bytes(marshal.dumps({key: {"app.env": "text, not bytes"} for key in kept}))
    assert runs.files() == first
    assert runs.rendered == 2
