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
    """Errors that explain themselves: printed as one message, no traceback."""
    from configcenter.ports.deploy_repo import DeployRepoError
    from configcenter.ports.platform import PlatformError
    from configcenter.ports.runstore import RunStoreError
    from configcenter.usecases.apply import ApplyError

    errors: list[type[BaseException]] = [
        ValueError,
        FileNotFoundError,
        DeployRepoError,
        PlatformError,
        RunStoreError,
        ApplyError,
    ]
    from configcenter.ports.builder import BuildFailed
    from configcenter.usecases.build import BuildsFailed

    errors += [BuildFailed, BuildsFailed]
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
    ws.focus = (env,)
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
    ws.focus = (env,)
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
    ws.focus = (env,)
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


def _print_results(results: list[Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from configcenter.output import out

    if not results:
        return
    style = {
        "healthy": "green",
        "committed": "green",
        "rolled_back": "yellow",
        "failed": "red",
        "skipped": "magenta",
        "blocked": "magenta",
        "noop": "dim",
        "dry-run": "dim",
    }
    table = Table(show_edge=False, title="result", title_justify="left")
    for column in ("service", "action", "outcome", "release", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for r in results:
        colour = style.get(r.outcome, "")
        reason = r.reason if len(r.reason) <= 90 else r.reason[:87] + "..."
        outcome = f"[{colour}]{r.outcome}[/{colour}]" if colour else escape(r.outcome)
        table.add_row(
            escape(r.service), escape(r.action), outcome, escape(r.release or ""), escape(reason)
        )
    out.print(table)


@cli.command()
@click.argument("env")
@click.option("--service", "-s", "services", multiple=True, help="Only this service (repeatable).")
@click.option("--no-build", is_flag=True, help="Do not build images; fail if one is needed.")
@click.option("--no-rollout", is_flag=True, help="Commit to the deploy repo only.")
@click.option(
    "--retry", multiple=True, metavar="SERVICE", help="Deploy SERVICE although it failed."
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Cancel a deployment that holds an app (Marathon 409).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Parallel builds/rollouts.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option("--verbose", "-v", is_flag=True, help="Stream build output.")
@pass_ws
@handle_errors
def apply(
    ws: Workspace,
    env: str,
    services: tuple[str, ...],
    no_build: bool,
    no_rollout: bool,
    retry: tuple[str, ...],
    dry_run: bool,
    force: bool,
    jobs: int,
    as_json: bool,
    verbose: bool,
) -> None:
    """Commit ENV's plan to the deploy repo, build, roll out, verify, roll back on failure."""
    from configcenter.output import PrintingReporter, QuietReporter

    ws.focus = (env,)
    from configcenter.usecases.apply import ApplyOptions, apply_env

    options = ApplyOptions(
        services=services or None,
        retry=retry,
        build=not no_build,
        rollout=not no_rollout,
        dry_run=dry_run,
        jobs=jobs,
        force=force,
    )
    reporter = QuietReporter() if as_json else PrintingReporter(verbose)
    result = apply_env(ws, env, options, reporter)
    if as_json:
        from configcenter.output import print_json

        print_json(
            {
                "env": env,
                "run": result.run_id,
                "commit": result.commit,
                "dry_run": result.dry_run,
                "plan": result.plan.to_json(),
                "results": [r.__dict__ for r in result.results],
                "exit_code": result.exit_code,
            }
        )
    elif not dry_run:
        _print_results([r for r in result.results if r.outcome != "noop"])
        if result.commit:
            click.echo(f"deploy repo commit {result.commit[:10]} (run {result.run_id})")
    sys.exit(result.exit_code)


@cli.command()
@click.argument("env")
@click.argument("service")
@click.option("--dry-run", is_flag=True, help="Server-side dry run; change nothing.")
@click.option("--force", is_flag=True, help="Cancel a deployment that holds the app (Marathon).")
@pass_ws
@handle_errors
def deploy(ws: Workspace, env: str, service: str, dry_run: bool, force: bool) -> None:
    """Roll out what the deploy repo says for SERVICE in ENV, alone."""
    from configcenter.output import PrintingReporter

    ws.focus = (env,)
    from configcenter.usecases.apply import deploy_service

    result = deploy_service(ws, env, service, PrintingReporter(), dry_run=dry_run, force=force)
    _print_results([result])
    sys.exit({"rolled_back": 3, "failed": 1}.get(result.outcome, 0))


@cli.command()
@click.argument("env")
@click.argument("service")
@click.option(
    "--to", "to", metavar="RELEASE", help="A release id from `history` (default: last good)."
)
@click.option("--no-rollout", is_flag=True, help="Restore the deploy repo only.")
@click.option("--dry-run", is_flag=True, help="Say what would be restored; change nothing.")
@pass_ws
@handle_errors
def rollback(
    ws: Workspace, env: str, service: str, to: str | None, no_rollout: bool, dry_run: bool
) -> None:
    """Back to the last good (or named) release: image and config, as a new commit."""
    from configcenter.output import PrintingReporter

    ws.focus = (env,)
    from configcenter.usecases.apply import rollback_service

    result = rollback_service(
        ws,
        env,
        service,
        to,
        rollout=not no_rollout,
        dry_run=dry_run,
        reporter=PrintingReporter(),
    )
    verb = "would roll back" if dry_run else "rolled back"
    click.echo(f"{service} in {env}: {verb} to {result.release} ({result.outcome})")


@cli.command()
@click.argument("env")
@click.option("--service", "-s", help="Only this service.")
@click.option("--limit", default=50, show_default=True, help="How many releases.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ws
@handle_errors
def history(ws: Workspace, env: str, service: str | None, limit: int, as_json: bool) -> None:
    """Releases in ENV, newest first: deploy repo commits joined with runs."""
    ws.focus = (env,)
    from configcenter.usecases.history import history as run_history

    entries = run_history(ws, env, service, limit)
    if as_json:
        from configcenter.output import print_json

        print_json([e.__dict__ for e in entries])
        return
    if not entries:
        click.echo(f"no releases in {env} yet")
        return
    rows = [("RELEASE", "AT", "OUTCOME", "TEMPLATE", "VALUES", "COMMIT", "BY", "IMAGE")]
    for e in entries:
        by = " ".join(x for x in (e.trigger, e.actor) if x) or "-"
        rows.append(
            (
                e.release,
                e.at.replace("T", " "),
                e.outcome,
                e.template_tag,
                e.values_digest.removeprefix("sha256:")[:10] or "-",
                e.commit[:8],
                by,
                e.image,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
        reason = next((e.reason for e in entries if e.release == row[0] and e.reason), "")
        if reason:
            click.echo(f"    {reason}")


@cli.command()
@click.argument("env")
@click.argument("service")
@click.option("--verbose", "-v", is_flag=True, help="Stream build output.")
@click.option("--dry-run", is_flag=True, help="Say whether a build is needed; build nothing.")
@pass_ws
@handle_errors
def build(ws: Workspace, env: str, service: str, verbose: bool, dry_run: bool) -> None:
    """Build SERVICE's image for ENV if its inputs changed, and push it."""
    from configcenter.output import PrintingReporter

    ws.focus = (env,)
    from configcenter.usecases.images import build_service

    outcome = build_service(ws, env, service, PrintingReporter(verbose).build_log, dry_run)
    if outcome.would_build:
        click.echo(f"{service}: would build {outcome.reference} (inputs changed)")
        return
    state = "built and pushed" if outcome.built else "image up to date"
    click.echo(f"{service}: {state}: {outcome.reference}")


@cli.command()
@click.argument("env")
@click.option("--heal", is_flag=True, help="Re-apply the deploy repo's state where it drifted.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--exit-code", is_flag=True, help="Exit 2 when drift was found.")
@pass_ws
@handle_errors
def reconcile(ws: Workspace, env: str, heal: bool, as_json: bool, exit_code: bool) -> None:
    """Report (and with --heal, fix) drift between ENV's platform and the deploy repo."""
    from configcenter.output import PrintingReporter, QuietReporter
    from configcenter.usecases.reconcile import reconcile as run_reconcile

    reporter = QuietReporter() if as_json else PrintingReporter()
    report = run_reconcile(ws, env, heal=heal, reporter=reporter)
    if as_json:
        from configcenter.output import print_json

        print_json(report.to_json())
    else:
        from rich.markup import escape
        from rich.table import Table

        from configcenter.output import out

        if report.has_drift:
            table = Table(show_edge=False, title=f"drift in {env}", title_justify="left")
            for column in ("service", "field", "desired", "live"):
                table.add_column(column, overflow="fold")
            for d in report.drifts:
                table.add_row(*(escape(x or "-") for x in (d.service, d.field, d.desired, d.live)))
            out.print(table)
        else:
            out.print(f"[green]no drift[/green] in {env} ({len(report.services)} service(s))")
        _print_results(report.healed)
    if report.outcome in ("failed", "rolled_back"):
        sys.exit(EXIT_ROLLED_BACK if report.outcome == "rolled_back" else EXIT_ERROR)
    if exit_code and report.has_drift:
        sys.exit(EXIT_CHANGES)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--run-store",
    "run_store",
    metavar="URL",
    help="sqlite:///path or postgresql://... for runs and the job queue.",
)
@click.option("--kubeconfig", metavar="PATH", help="Cluster for the leader Lease.")
@click.option("--lease-namespace", metavar="NS", help="Namespace of the leader Lease.")
@click.option("--lease-name", default="configcenter-serve", show_default=True)
@click.option("--lease-duration", default=15.0, show_default=True, help="Seconds a lease lasts.")
@click.option("--workers", default=2, show_default=True, help="Runs at once (one per env).")
@click.option("--identity", metavar="NAME", help="This replica's name (default: host-pid).")
@pass_ws
@handle_errors
def serve(
    ws: Workspace,
    host: str,
    port: int,
    run_store: str | None,
    kubeconfig: str | None,
    lease_namespace: str | None,
    lease_name: str,
    lease_duration: float,
    workers: int,
    identity: str | None,
) -> None:
    """Webhooks, the reconcile schedule, the status API and the status page."""
    from configcenter.serve import ServeOptions, run_server

    if run_store:
        ws.run_store_url = run_store
    run_server(
        ws,
        ServeOptions(
            host=host,
            port=port,
            kubeconfig=kubeconfig,
            lease_namespace=lease_namespace,
            lease_name=lease_name,
            lease_duration=lease_duration,
            workers=workers,
            identity=identity,
        ),
    )


@cli.command()
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--service", "-s", help="Only this service (branch promote/FROM-to-TO/SERVICE).")
@click.option("--dry-run", is_flag=True, help="Print the merge request; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ws
@handle_errors
def promote(
    ws: Workspace, source: str, target: str, service: str | None, dry_run: bool, as_json: bool
) -> None:
    """Open (or update) a merge request carrying FROM's last good pins to TO."""
    from configcenter.usecases.promote import promote as run_promote

    result = run_promote(ws, source, target, service=service, dry_run=dry_run)
    if as_json:
        from configcenter.output import print_json

        print_json(result.to_json())
        return
    if result.status == "dry-run":
        click.echo(f"title:   {'Draft: ' if result.draft else ''}{result.title}")
        click.echo(f"branch:  {result.branch} -> {result.target_branch}")
        click.echo(f"labels:  {', '.join(result.labels)}")
        click.echo("\n" + result.description)
    click.echo(result.message)


def main() -> None:
    cli(prog_name="configcenter")
