"""The configcenter command line: parse, call a use case, print. No business logic here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from configcenter.core.errors import ConfigError
from configcenter.usecases.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_ROLLED_BACK = 0, 1, 2, 3


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback, exit 1."""


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            from configcenter.output import err, print_problems

            print_problems(exc.problems)
            errors = sum(1 for p in exc.problems if p.severity == "error")
            err.print(f"{errors or len(exc.problems)} problem(s); nothing was changed.")
            sys.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            known = _known_errors()
            if isinstance(exc, known):
                raise UserError(str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]


def _known_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, FileNotFoundError]
    try:
        from configcenter.ports.deploy_repo import DeployRepoError

        errors.append(DeployRepoError)
    except ImportError:
        pass
    return tuple(errors)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "-C",
    "config_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="The config repo.",
)
@click.option(
    "--deploy-repo", metavar="URL", help="Deploy repo path or URL (overrides configcenter.yaml)."
)
@click.option("--run-store", metavar="URL", help="sqlite:///path or postgresql://... for runs.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.version_option(package_name="configcenter")
@click.pass_context
def cli(
    ctx: click.Context,
    config_dir: Path,
    deploy_repo: str | None,
    run_store: str | None,
    strict: bool,
) -> None:
    """configcenter: plan, render, commit, build, roll out and roll back services
    across environments, from templates and values kept in a Git config repo."""
    ctx.obj = Workspace(config_dir, deploy_repo, run_store, strict)


pass_ws = click.make_pass_decorator(Workspace)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ws
@handle_errors
def validate(ws: Workspace, as_json: bool) -> None:
    """Load and check everything; render every service in every environment."""
    from configcenter.usecases.inspect import validate as run_validate

    report = run_validate(ws)
    if as_json:
        from configcenter.output import print_json

        print_json(
            {
                "ok": True,
                "environments": report.environments,
                "services": report.services,
                "warnings": [
                    {"source": str(w.source), "message": w.message, "hint": w.hint}
                    for w in report.warnings
                ],
            }
        )
        return
    from configcenter.output import out, print_problems

    print_problems(report.warnings)
    out.print(
        f"[green]ok[/green]: {report.environments} environments, {report.services} service "
        f"configs, {report.renders} rendered, {len(report.warnings)} warning(s)"
    )


@cli.command()
@click.argument("env")
@click.argument("service")
@click.argument("key", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ws
@handle_errors
def explain(ws: Workspace, env: str, service: str, key: str | None, as_json: bool) -> None:
    """Merged values of SERVICE in ENV, each with the file:line it came from."""
    from configcenter.core.values import masked
    from configcenter.usecases.inspect import explain as run_explain

    rows = run_explain(ws, env, service, key)
    if as_json:
        from configcenter.output import print_json

        print_json(
            [
                {
                    "key": r.key,
                    "value": masked(r.entry.value),
                    "source": str(r.entry.source),
                    "layer": r.entry.layer,
                    "overrides": [
                        {"value": masked(o.value), "source": str(o.source), "layer": o.layer}
                        for o in r.entry.overrode
                    ],
                }
                for r in rows
            ]
        )
        return
    from configcenter.output import print_explain

    print_explain(rows, env, service)


@cli.command()
@click.argument("env")
@click.option("--service", "-s", "services", multiple=True, help="Only this service (repeatable).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write files to DIR/<service>/<file> instead of printing them.",
)
@pass_ws
@handle_errors
def render(ws: Workspace, env: str, services: tuple[str, ...], out: Path | None) -> None:
    """Render ENV's files as apply would, without side effects."""
    from configcenter.usecases.inspect import render as run_render
    from configcenter.usecases.inspect import write_rendered

    rendered = run_render(ws, env, services or None)
    if out is not None:
        written = write_rendered(rendered, out)
        click.echo(f"wrote {len(written)} files for {len(rendered)} services to {out}")
        return
    for item in rendered:
        for name, data in item.files.items():
            click.echo(f"# ---- {env}/{item.service}/{name}")
            click.echo(data.decode("utf-8", "replace"), nl=False)


@cli.command()
@click.argument("env")
@click.option("--service", "-s", "services", multiple=True, help="Only this service (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (DESIGN §5).")
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are changes.")
@click.option("--retry", multiple=True, help="Plan SERVICE even though its inputs failed before.")
@pass_ws
@handle_errors
def plan(
    ws: Workspace,
    env: str,
    services: tuple[str, ...],
    as_json: bool,
    exit_code: bool,
    retry: tuple[str, ...],
) -> None:
    """What apply would do in ENV, and why."""
    from configcenter.usecases.inspect import plan_env

    result = plan_env(ws, env, only=services or None, retry=retry)
    if as_json:
        from configcenter.output import print_json

        print_json(result.to_json())
    else:
        from configcenter.output import print_plan

        print_plan(result)
    if exit_code and result.changes:
        sys.exit(EXIT_CHANGES)


@cli.group()
def template() -> None:
    """Template versions (Git tags <service>/<version>)."""


@template.command("release")
@click.argument("service")
@click.argument("version")
@click.option("--dry-run", is_flag=True, help="Validate only; create no tag.")
@pass_ws
@handle_errors
def template_release(ws: Workspace, service: str, version: str, dry_run: bool) -> None:
    """Validate templates/SERVICE as committed and tag it SERVICE/VERSION."""
    from configcenter.output import out, print_problems
    from configcenter.usecases.release_template import release_template

    released = release_template(ws, service, version, dry_run=dry_run)
    for note in released.notes:
        out.print(f"[yellow]note[/yellow]: {note.source}: {note.message} ({note.hint})")
    envs = ", ".join(released.rendered_for) or "no environment"
    verb = "would tag" if dry_run else "tagged"
    out.print(
        f"[green]{verb}[/green] {released.tag} at {released.commit[:10]} (rendered for {envs})"
    )
    print_problems([])


def main() -> None:
    cli(prog_name="configcenter")
