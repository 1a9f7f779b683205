"""The docs in the repository: references current, links inside the repository, examples
that run as written, shell completion of environment and service names."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import requests
from click.shell_completion import ShellComplete

from configcenter.cli import cli as cli_group
from configcenter.core import schema
from configcenter.docs_reference import generated, walk
from tests.support.configrepo import GIT_IDENTITY, ConfigRepo, need_git
from tests.support.registry_fixtures import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Docs whose ```sh blocks are examples a reader runs: each is classified and, offline, run.
EXAMPLE_DOCS = [ROOT / "README.md", ROOT / "docs/quickstart.md", ROOT / "docs/troubleshooting.md"]


# -- generated references ----------------------------------------------------------------------


def test_references_are_current() -> None:
    stale = [
        rel
        for rel, text in generated().items()
        if not (ROOT / rel).exists() or (ROOT / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale: {', '.join(stale)}; run scripts/gen-docs and commit the result"


def test_config_reference_lists_every_schema_key() -> None:
    text = (ROOT / "docs/reference/config.md").read_text(encoding="utf-8")
    for spec in (
        schema.PROJECT,
        schema.TEMPLATE,
        schema.DEFAULTS,
        schema.ENVIRONMENT,
        schema.SERVICE,
    ):
        for row in walk(spec):
            assert f"| `{row.key}` |" in text, row.key
    assert "| `platforms.NAME.namespace` | string |" in text
    assert "| `deploy_repo.branch` | string |  | `main` |" in text


def test_cli_reference_has_every_command_and_the_exit_codes() -> None:
    text = (ROOT / "docs/reference/cli.md").read_text(encoding="utf-8")
    for name in cli_group.commands:
        assert f"## configcenter {name}\n" in text, name
    assert "## configcenter template release\n" in text
    assert "64  usage error" in text


# -- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_point_inside_the_repository(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code, not links
    text = re.sub(r"(?m)^    .*$", "", text)  # indented code blocks
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"
    assert "../shared" not in doc.read_text(encoding="utf-8")


def test_no_product_code_cites_the_design_document() -> None:
    for path in (ROOT / "configcenter").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "DESIGN" not in text and "../shared" not in text, path


# -- examples that run as written ------------------------------------------------------------------


@dataclass
class Block:
    doc: str
    line: int
    kind: str  # offline | setup | needs ...
    commands: list[str]


MARKER = re.compile(r"^<!-- example: ([^>]*?) -->$")


def blocks(doc: Path) -> list[Block]:
    """Every ```sh block, with the `<!-- example: KIND -->` marker in front of it."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found = []
    for index, line in enumerate(lines):
        if line != "```sh":
            continue
        marker = MARKER.match(lines[index - 1]) if index else None
        assert marker, (
            f"{doc.name}:{index + 1}: a ```sh block needs an <!-- example: offline | setup | "
            "needs registry cluster --> marker in front of it"
        )
        end = lines.index("```", index + 1)
        body = lines[index + 1 : end]
        prompts = [line[2:] for line in body if line.startswith("$ ")]
        commands = prompts or [line for line in body if line.strip() and not line.startswith("#")]
        found.append(Block(doc.name, index + 1, marker.group(1), commands))
    return found


def expected_code(command: str) -> int:
    comment = command.partition(" #")[2]
    match = re.search(r"\bexit (\d+)", comment)
    return int(match.group(1)) if match else 0


def script(block: Block) -> str:
    """The block as one bash script: each command must exit as its comment says."""
    out = []
    for number, command in enumerate(block.commands, start=1):
        want = expected_code(command)
        out.append(command)
        out.append(
            f'rc=$?; if [ $rc -ne {want} ]; then echo "{block.doc}:{block.line} command {number} '
            f'exited $rc, not {want}: "{shlex.quote(command)} >&2; exit 99; fi'
        )
    return "\n".join(out) + "\n"


def run_blocks(found: list[Block], cwd: Path, tmp: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "XDG_STATE_HOME": str(tmp / "state"),
        "NO_COLOR": "1",
        # Offline means offline, whatever cluster the shell running the tests points at.
        "KUBECONFIG": str(tmp / "no-cluster" / "kubeconfig"),
    }
    for key in [k for k in env if k.startswith("CONFIGCENTER_")]:
        del env[key]
    for block in found:
        proc = subprocess.run(
            ["bash", "-c", script(block)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr


def test_every_sh_block_is_classified() -> None:
    kinds = {b.kind.split(" (")[0] for doc in EXAMPLE_DOCS for b in blocks(doc)}
    assert kinds <= {
        "offline",
        "setup",
        "needs registry",
        "needs cluster",
        "needs registry cluster",
    }


def test_readme_offline_examples_run_on_the_example_repo(tmp_path: Path) -> None:
    need_git()
    config = example_repo(tmp_path)
    offline = [b for b in blocks(ROOT / "README.md") if b.kind == "offline"]
    assert len(offline) >= 3
    run_blocks(offline, config, tmp_path)
    # The examples did what they say: worker's queue was changed and committed.
    repo = ConfigRepo(config)
    assert "shop-dev-jobs-v2" in repo.read("environments/dev/worker.yaml")


def test_quickstart_examples_run_in_an_empty_directory(tmp_path: Path) -> None:
    need_git()
    work = tmp_path / "work"
    work.mkdir()
    offline = [b for b in blocks(ROOT / "docs/quickstart.md") if b.kind == "offline"]
    assert offline
    run_blocks(offline, work, tmp_path)
    assert (work / "acme-config-deploy.git").is_dir()


def example_repo(tmp_path: Path) -> Path:
    """scripts/make-example-repo into tmp_path/example; its shop-config."""
    dest = tmp_path / "example"
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts/make-example-repo"), str(dest)],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        check=False,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    return dest / "shop-config"


def test_readme_registry_examples_run_against_a_real_registry(
    tmp_path: Path, registry: RegistryServer, busybox_base: str
) -> None:
    """The `needs registry` blocks, with the example pointed at the fixture's registry (the
    example names 127.0.0.1:5000, which scripts/demo starts) and a real buildah build."""
    need_git()
    base = f"{registry.url}/v2/base/busybox/manifests"
    got = requests.get(f"{base}/1", headers={"Accept": OCI_MANIFEST}, timeout=30)
    got.raise_for_status()
    put = requests.put(
        f"{base}/latest",
        data=got.content,
        headers={"Content-Type": got.headers["Content-Type"]},
        timeout=30,
    )
    assert put.status_code == 201, put.text
    config = example_repo(tmp_path)
    repo = ConfigRepo(config)
    for rel in ("configcenter.yaml", "environments/_defaults.yaml"):
        repo.write(rel, repo.read(rel).replace("127.0.0.1:5000", registry.host))
    repo.commit("registry of the test")
    needing = [b for b in blocks(ROOT / "README.md") if b.kind.split(" (")[0] == "needs registry"]
    assert needing
    run_blocks(needing, config, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "configcenter", "build", "dev", "api", "--json"],
        cwd=config,
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["built"], result["would_build"]) == (False, False)
    assert result["reference"].startswith(f"{registry.host}/shop/api@sha256:")


@pytest.mark.parametrize(
    "block",
    [b for doc in EXAMPLE_DOCS for b in blocks(doc) if b.kind.startswith("needs")],
    ids=lambda b: f"{b.doc}:{b.line}",
)
def test_examples_needing_a_registry_or_cluster(block: Block) -> None:
    """These run against the example only with its registry (127.0.0.1:5000) and a
    cluster: scripts/demo starts both and runs them; here they are checked for shape."""
    lexer = shlex.shlex("\n;".join(block.commands), posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            commands.append([])
        else:
            commands[-1].append(token)
    assert len(commands) >= len(block.commands)
    for words in commands:
        command = " ".join(words)
        if not words or words[0] != "configcenter":
            continue
        # Parsed exactly as the CLI would parse them: an unknown option or command fails.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click's protected_args
            ctx = cli_group.make_context("configcenter", words[1:])
            name, *rest = [*ctx.protected_args, *ctx.args]
        sub = cli_group.get_command(ctx, name)
        assert sub is not None, command
        while isinstance(sub, click.Group):
            sub_ctx = sub.make_context(name, rest, parent=ctx)
            name, *rest = [*sub_ctx.protected_args, *sub_ctx.args]
            sub = sub.get_command(sub_ctx, name)
            assert sub is not None, command
        sub.make_context(name, rest, parent=ctx)


# -- shell completion ------------------------------------------------------------------------------


def complete(args: list[str], incomplete: str) -> list[str]:
    comp = ShellComplete(cli_group, {}, "configcenter", "_CONFIGCENTER_COMPLETE")
    return [c.value for c in comp.get_completions(args, incomplete)]


def test_completion_of_environments_and_services(repo: ConfigRepo) -> None:
    root = str(repo.root)
    assert complete(["-C", root, "plan"], "") == ["dev", "prod"]
    assert complete(["-C", root, "plan"], "d") == ["dev"]
    assert complete(["-C", root, "explain", "dev"], "") == ["api", "db"]
    assert complete(["-C", root, "plan", "dev", "--service"], "a") == ["api"]
    assert complete(["-C", root, "diff"], "p") == ["prod"]


def test_completion_finds_the_repo_upward(
    repo: ConfigRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.root / "templates")
    assert complete(["render"], "") == ["dev", "prod"]


def test_every_template_yaml_key_is_described_with_its_real_type() -> None:
    """A user writes template.yaml from this table: no key without a description, and
    `verify` is the list it is in the README's examples (or a mapping), not "mapping"."""
    from configcenter.docs_reference import config_reference

    text = config_reference()
    section = text.split("## templates/SERVICE/template.yaml", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    assert rows
    for cells in rows:
        assert cells[-1].strip(" |"), f"no description: {cells[0]}"
    types = {cells[0].strip("| `"): cells[1] for cells in rows}
    assert types["verify"] == "list of strings or a mapping"
    assert "verify.http.path" in types and "hooks.pre_deploy" in types
