"""`render --out DIR` again into its own DIR: unchanged files stay, and DIR always ends as a
render into a new directory would leave it, byte for byte, whatever happened to it between.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from configcenter.cli import cli as cli_group
from tests.support.configrepo import ConfigRepo

API_DEV = "environments/dev/api.yaml"
MARKER = ".configcenter-render"


def render(repo: ConfigRepo, out: Path) -> None:
    result = CliRunner().invoke(
        cli_group, ["-C", str(repo.root), "render", "dev", "--out", str(out)], env={"NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output


def snapshot(out: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every entry under `out` but the marker's manifest: its kind, permissions, content."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        st = path.lstat()
        mode = f"{stat.filemode(st.st_mode)}"
        if path.is_symlink():
            found[rel] = (mode, os.readlink(path).encode())
        elif path.is_dir():
            found[rel] = (mode, None)
        else:
            data = path.read_bytes()
            found[rel] = (mode, data.splitlines()[0] if rel == MARKER else data)
    return found


def fresh(repo: ConfigRepo, tmp_path: Path) -> dict[str, tuple[str, bytes | None]]:
    """What a render into a new directory writes now."""
    out = tmp_path / f"fresh-{len(list(tmp_path.glob('fresh-*')))}"
    render(repo, out)
    return snapshot(out)


def inodes(out: Path) -> dict[str, tuple[int, int]]:
    """Which file each path is (an inode freed by a rewrite may be used again at once)."""
    return {
        p.relative_to(out).as_posix(): (p.lstat().st_ino, p.lstat().st_ctime_ns)
        for p in out.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def nested_api(repo: ConfigRepo) -> None:
    """dev's api at HEAD, also writing conf/app.conf (a file in a folder)."""
    text = repo.read("templates/api/template.yaml").replace(
        "outputs: [", "outputs: [conf/app.conf, "
    )
    repo.write("templates/api/template.yaml", text)
    repo.write("templates/api/conf/app.conf.j2", "level = {{ LOG_LEVEL }}\n")
    repo.write(API_DEV, repo.read(API_DEV).replace("template: 1.0.0", "template: HEAD"))
    repo.commit("api writes conf/app.conf")


def test_rendering_again_keeps_unchanged_files_and_ends_as_a_fresh_render(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    nested_api(repo)
    out = tmp_path / "out"
    render(repo, out)
    assert snapshot(out) == fresh(repo, tmp_path)
    first = inodes(out)

    render(repo, out)  # nothing changed: every file is the one written first
    assert snapshot(out) == fresh(repo, tmp_path)
    assert inodes(out) == first
    render(repo, out)
    assert inodes(out) == first

    # One value changes: only the files that render differently are written again.
    repo.write(API_DEV, repo.read(API_DEV) + "values:\n  LOG_LEVEL: trace\n")
    repo.commit("api: trace")
    render(repo, out)
    assert snapshot(out) == fresh(repo, tmp_path)
    assert b"level = trace" in (out / "api/conf/app.conf").read_bytes()
    now = inodes(out)
    assert now["db/app.env"] == first["db/app.env"]
    assert now["api/deployment.yaml"] == first["api/deployment.yaml"]
    assert now["api/app.env"] != first["api/app.env"]

    # An output (and its folder) goes away; a new one comes.
    text = repo.read("templates/api/template.yaml").replace("conf/app.conf, ", "extra.txt, ")
    repo.write("templates/api/template.yaml", text)
    repo.write("templates/api/extra.txt.j2", "extra for {{ env }}\n")
    repo.commit("api: extra.txt instead of conf/app.conf")
    render(repo, out)
    assert snapshot(out) == fresh(repo, tmp_path)
    assert not (out / "api/conf").exists()
    assert (out / "api/extra.txt").read_bytes() == b"extra for dev\n"


def _edit_keeping_size_and_times(path: Path) -> None:
    st = path.lstat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"debug", b"DEBUG"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace_with_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize(
    "change",
    [
        "edit keeping size and times",
        "delete",
        "replace with a link",
        "add a file",
        "add a folder",
        "chmod",
        "folder becomes a link",
        "marker edited",
    ],
)
@pytest.mark.parametrize("racy", [True, False], ids=["racy", "marker newer"])
def test_a_change_behind_its_back_is_rendered_over(
    repo: ConfigRepo, tmp_path: Path, change: str, racy: bool
) -> None:
    """Whatever changed in DIR since the last render, the next one leaves it as a fresh
    render would. Files as new as the marker are compared by content (a change in the
    same timestamp tick would keep their times), older ones by size, mode, times, inode."""
    nested_api(repo)
    out = tmp_path / "out"
    render(repo, out)
    set_marker_time(out, racy)
    render(repo, out)  # nothing changed: nothing is written again
    assert snapshot(out) == fresh(repo, tmp_path)
    set_marker_time(out, racy)
    kept = inodes(out)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not render's\n")
    app_env = out / "api/app.env"
    if change == "edit keeping size and times":
        _edit_keeping_size_and_times(app_env)
    elif change == "delete":
        app_env.unlink()
    elif change == "replace with a link":
        _replace_with_link(app_env, outside)
    elif change == "add a file":
        (out / "api/notes.txt").write_text("mine\n")
    elif change == "add a folder":
        (out / "api/more").mkdir()
    elif change == "chmod":
        app_env.chmod(0o600)
    elif change == "folder becomes a link":
        conf = out / "api/conf"
        (conf / "app.conf").unlink()
        conf.rmdir()
        conf.symlink_to(tmp_path)
    elif change == "marker edited":
        (out / MARKER).write_text("written by configcenter render --out\n{}\n")
    assert snapshot(out) != fresh(repo, tmp_path) or change == "marker edited"

    render(repo, out)
    assert snapshot(out) == fresh(repo, tmp_path)
    assert outside.read_bytes() == b"not render's\n", "nothing was written through a link"
    assert b"LOG_LEVEL=debug" in app_env.read_bytes()
    assert inodes(out) != kept, "everything was written again"


def set_marker_time(out: Path, racy: bool) -> None:
    """The marker no newer than any file (racy: every file is compared by content), or
    well after them all (their recorded size, mode, times and inode are trusted)."""
    times = [
        t
        for p in out.rglob("*")
        if p.name != MARKER
        for t in (p.lstat().st_mtime_ns, p.lstat().st_ctime_ns)
    ]
    when = min(times) if racy else max(times) + 10**10
    os.utime(out / MARKER, ns=(when, when))


def test_a_change_in_the_tick_the_file_was_written_is_found_by_its_content(
    repo: ConfigRepo, tmp_path: Path
) -> None:
    """A file changed right after render wrote it (within one tick of the file system's
    clock) can keep every time the manifest recorded: files as new as the marker are
    read. Here the manifest is made to record the edited file's times, as it would then."""
    out = tmp_path / "out"
    render(repo, out)
    app_env = out / "api/app.env"
    _edit_keeping_size_and_times(app_env)
    st = app_env.lstat()
    head, manifest = (out / MARKER).read_text().split("\n", 1)
    rows = json.loads(manifest)
    rows["files"]["api/app.env"][3:5] = [st.st_mtime_ns, st.st_ctime_ns]
    (out / MARKER).write_text(f"{head}\n{json.dumps(rows)}\n")
    os.utime(out / MARKER, ns=(st.st_mtime_ns, st.st_mtime_ns))  # written in the same tick

    render(repo, out)
    assert snapshot(out) == fresh(repo, tmp_path)
    assert b"LOG_LEVEL=debug" in app_env.read_bytes()
