"""The benchmark's generated repo stays a valid config repo (a tiny one, so this is fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from configcenter.core.plan import make_plan
from configcenter.core.render import Renderer
from configcenter.core.state import EnvState
from tests.support.configrepo import ConfigRepo, need_git, state_after

GENERATE = Path(__file__).resolve().parents[2] / "benchmarks" / "generate.py"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_generate", GENERATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_repo_loads_plans_and_replans_as_noop(tmp_path: Path) -> None:
    need_git()
    root = load_generator().generate(tmp_path / "bench", 12)
    repo = ConfigRepo(root)
    assert repo.problems() == []
    config = repo.load()
    assert {len(e.services) for e in config.environments.values()} == {12}
    assert config.environment("dev").services["svc-0010"].template.tag == "1.1.0"
    assert config.environment("prod").services["svc-0010"].template.tag == "1.0.0"
    for env in ("dev", "demo", "prod"):
        first = make_plan(config, env, EnvState(env), Renderer(), lambda path: None)
        assert {s.action for s in first.services} == {"create"}
        app_env = first.services[0].files["app.env"]  # type: ignore[index]
        assert app_env.count(b"\n") >= 30
        again = make_plan(config, env, state_after(first), Renderer(), lambda path: None)
        assert {s.action for s in again.services} == {"noop"}
