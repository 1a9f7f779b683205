"""The configcenter command line: parse, call a use case, print. No business logic here."""

from __future__ import annotations

import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from configcenter.core.errors import ConfigError, Problem, Source
from configcenter.usecases.workspace import Workspace, is_remote_url

if TYPE_CHECKING:
    import json

    from configcenter.core.converge import LiveServices

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_ROLLED_BACK, EXIT_USAGE = 0, 1, 2, 3, 64
#: The collector's thresholds as the interpreter started (serve runs with them).
DEFAULT_GC_THRESHOLD = gc.get_threshold()

EXIT_CODES_HELP = """\b
Exit codes:
  0   success
  1   error: bad input, a failed step (nothing was changed when the input was bad)
  2   plan/reconcile --exit-code: there are changes (or drift); used for nothing else
  3   a rollout or verification failed and was rolled back
  64  usage error: unknown option, missing argument, bad option value

\b
Environment variables (the global options, for CI):
  CONFIGCENTER_CONFIG_REPO  -C      CONFIGCENTER_DEPLOY_REPO  --deploy-repo
  CONFIGCENTER_RUN_STORE    --run-store   CONFIGCENTER_STRICT=1  --strict

The config repo is found upward from the current directory (like git) unless -C is given.
Global options may also be given after the command name."""

# Global options that take a value, and flags; hoisted when given after the command name.
GLOBAL_VALUE_OPTIONS = ("-C", "--deploy-repo", "--run-store")
GLOBAL_FLAGS = ("--strict",)


class UserError(click.ClickException):
    """An error the user can fix; printed without a traceback, exit 1."""


def version() -> str:
    # The package's own constant (pyproject.toml reads it too): importlib.metadata's
    # lookup cost every --json answer ~20 ms.
    from configcenter import __version__

    return __version__


def problem_json(p: Problem) -> dict[str, Any]:
    return {
        "file": p.source.file or None,
        "line": p.source.line or None,
        "message": p.message,
        "hint": p.hint,
        "severity": p.severity,
    }


def emit(data: dict[str, Any], ok: bool = True) -> None:
    """One JSON object on stdout: `ok` and `version` first, then the command's data.

    Written without `configcenter.output`: importing rich is 0.1 s a script need not pay.
    """
    sys.stdout.write(json_text({"ok": ok, "version": version(), **data}))
    sys.stdout.write("\n")


def json_text(value: Any, depth: int = 0) -> str:
    """`value` as JSON, indented two levels deep (the object's keys, and the items of its
    lists: a plan's services, one per line), each deeper value on its line as one.

    The deeper values are written by json's C encoder: with `indent` json falls back to
    its pure-Python encoder, 0.6 s for the plan of 5,000 services.
    """
    pad = "  " * (depth + 1)
    end = "\n" + "  " * depth
    if depth < 2 and isinstance(value, dict) and value:
        items = [f"{pad}{_json_key(k)}: {json_text(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + end + "}"
    if depth < 2 and isinstance(value, list | tuple) and value:
        if depth == 1:  # a plan's services: one encoder for all, no call per item here
            encode = _json_encoder().encode
            return "[\n" + ",\n".join(pad + text for text in map(encode, value)) + end + "]"
        return "[\n" + ",\n".join(pad + json_text(v, depth + 1) for v in value) + end + "]"
    return _json_encoder().encode(value)


@functools.cache
def _json_encoder() -> json.JSONEncoder:
    """`json.dumps(value, default=str)` as one encoder (dumps makes one per call)."""
    import json

    return json.JSONEncoder(default=str)


def _json_key(key: object) -> str:
    """An object key as json writes it (a number or boolean key becomes its JSON text)."""
    import json

    if not isinstance(key, str):
        key = next(iter(json.loads(json.dumps({key: 0}))))
    return json.dumps(key)


def warn_line(text: str) -> None:
    """`warning: TEXT` on stderr, as plain text (no rich needed for one line)."""
    click.echo(f"warning: {text}", err=True)


def wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return False


def fail(
    problems: Sequence[Problem],
    code: int = EXIT_ERROR,
    as_json: bool | None = None,
    ctx: click.Context | None = None,
) -> NoReturn:
    """Report problems (JSON on stdout with --json, text on stderr otherwise) and exit.
    `ctx` names the command (default: the current one)."""
    if as_json if as_json is not None else wants_json():
        ctx = ctx or click.get_current_context(silent=True)
        command = ctx.command_path.split(" ", 1)[1] if ctx and " " in ctx.command_path else None
        emit(
            {
                "command": command,
                "exit_code": code,
                "problems": [problem_json(p) for p in problems],
            },
            ok=False,
        )
    else:
        from configcenter.output import err, print_problems

        print_problems(problems)
        errors = sum(1 for p in problems if p.severity == "error")
        err.print(f"{errors or len(problems)} problem(s); nothing was changed.")
    sys.exit(code)


def _strict(problems: Sequence[Problem]) -> list[Problem]:
    """Under --strict the warnings that stopped the command are errors: say so, and why."""
    from dataclasses import replace

    return [
        replace(
            p,
            severity="error",
            hint=(p.hint + "; " if p.hint else "") + "--strict turns warnings into errors",
        )
        if p.severity == "warning"
        else p
        for p in problems
    ]


BUG_NOTE = (
    "This is a bug in configcenter, not a problem with your input: please report "
    "it with the traceback above and the command you ran."
)


def handle_errors(fn: F) -> F:
    """Every command: user errors print as one message (exit 1), a bug shows its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            report_error(exc)

    wrapper.handles_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def report_error(exc: Exception) -> NoReturn:
    """A config or user error: its problems or message, no traceback (exit 1); with --json
    one JSON object. Anything else is a bug: re-raised with a note asking to report it."""
    if isinstance(exc, ConfigError):
        fail(_strict(exc.problems) if exc.strict else exc.problems)
    if isinstance(exc, _known_errors()):
        if wants_json():
            fail([_problem_of(exc)])
        raise UserError(str(exc)) from None
    if BUG_NOTE in getattr(exc, "__notes__", ()):
        raise exc  # reported once already, by the command's own handler
    exc.add_note(BUG_NOTE)
    if wants_json():
        # Scripts still get their one object; the traceback goes to stderr. Only the
        # type is named here: the text of an unexpected error is not known to be safe.
        from configcenter.output import print_json

        print_json(
            {
                "ok": False,
                "version": version(),
                "exit_code": EXIT_ERROR,
                "problems": [
                    problem_json(
                        Problem(
                            Source(""),
                            f"internal error ({type(exc).__name__}); the traceback is on stderr",
                            "this is a bug in configcenter: please report it",
                        )
                    )
                ],
            }
        )
    raise exc


def _problem_of(exc: BaseException) -> Problem:
    """A typed user error keeps its file, line and hint as data; others are one message."""
    from configcenter.core import errors as core_errors

    if isinstance(exc, core_errors.UserError):
        return Problem(exc.source or Source(""), exc.message, exc.hint)
    return Problem(Source(""), str(exc), getattr(exc, "hint", "") or "")


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that explain themselves: printed as one message, no traceback.

    A bare ValueError is not one of them: user errors are `core.errors.UserError`.
    apply's, observe's and template release's errors are typed (core.errors) kinds.
    """
    from configcenter.core import errors as core_errors
    from configcenter.ports.builder import BuildFailed
    from configcenter.ports.deploy_repo import DeployRepoError
    from configcenter.ports.runstore import RunStoreError
    from configcenter.usecases.build import BuildsFailed

    return (
        core_errors.UserError,
        core_errors.PlatformFailure,
        core_errors.TransientFailure,
        FileNotFoundError,
        DeployRepoError,
        RunStoreError,
        BuildFailed,
        BuildsFailed,
    )


def find_config_repo(start: Path) -> Path | None:
    """The nearest directory at or above `start` holding configcenter.yaml (like git)."""
    start = start.resolve()
    for candidate in (start, *start.parents):
        if (candidate / "configcenter.yaml").is_file():
            return candidate
    return None


def hoist_global_options(group: click.Group, args: list[str]) -> list[str]:
    """Move global options written after the command name in front of it.

    `configcenter plan dev --strict` means `configcenter --strict plan dev`. An option the
    command defines itself (serve --run-store) stays with the command; `--` ends the scan.
    """
    front: list[str] = []
    index = 0
    while index < len(args):  # skip the group's own options up to the command name
        token = args[index]
        if token in GLOBAL_VALUE_OPTIONS:
            front += args[index : index + 2]
            index += 2
        elif token.startswith("-"):
            front.append(token)
            index += 1
        else:
            break
    if index >= len(args):
        return args
    command_path = [args[index]]
    command: click.Command | None = group.commands.get(args[index])
    rest = args[index + 1 :]
    own: set[str] = set()
    sub = command
    position = 0
    while isinstance(sub, click.Group) and position < len(rest) and rest[position] in sub.commands:
        command_path.append(rest[position])
        sub = sub.commands[rest[position]]
        position += 1
    if sub is not None:
        for param in sub.params:
            own.update(getattr(param, "opts", ()))
    hoisted: list[str] = []
    kept: list[str] = rest[:position]
    index = position
    while index < len(rest):
        token = rest[index]
        name = token.split("=", 1)[0]
        if token == "--":
            kept += rest[index:]
            break
        if name in GLOBAL_VALUE_OPTIONS and name not in own:
            if "=" in token:
                hoisted.append(token)
                index += 1
            else:
                hoisted += rest[index : index + 2]
                index += 2
            continue
        if token.startswith("-C") and len(token) > 2 and "-C" not in own:
            hoisted.append(token)
            index += 1
            continue
        if token in GLOBAL_FLAGS and token not in own:
            hoisted.append(token)
            index += 1
            continue
        kept.append(token)
        index += 1
    return [*front, *hoisted, *command_path[:1], *kept]


def _exit_now_if_busy() -> None:
    """After Ctrl-C, do not wait for worker threads (a rollout being watched) to end: what
    was committed stays committed and the next apply watches and records what rolls out."""
    import threading

    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        click.echo(
            "interrupted while a rollout was watched: it goes on without configcenter; "
            "run `configcenter apply` again to watch it and record its outcome",
            err=True,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_ERROR)


class ConfigcenterCLI(click.Group):
    """Usage errors exit 64 (2 means "there are changes"); with --json they are JSON too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(self, list(args)))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
        try:
            return super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if as_json:
                hint = "see --help"
                if exc.ctx is not None:
                    hint = f"see {exc.ctx.command_path} --help"
                problem = Problem(Source(""), exc.format_message(), hint)
                fail([problem], EXIT_USAGE, as_json=True, ctx=exc.ctx)
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            if as_json:
                fail([Problem(Source(""), exc.format_message())], exc.exit_code, as_json=True)
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            _exit_now_if_busy()
            sys.exit(EXIT_ERROR)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # outside a command (global options, closing): the same rules
            try:
                report_error(exc)
            except UserError as user:
                user.show()
                sys.exit(user.exit_code)


@click.group(
    cls=ConfigcenterCLI,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "-C",
    "config_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CONFIGCENTER_CONFIG_REPO",
    show_envvar=True,
    help="The config repo (default: found upward from the current directory).",
)
@click.option(
    "--deploy-repo",
    metavar="URL",
    envvar="CONFIGCENTER_DEPLOY_REPO",
    show_envvar=True,
    help="Deploy repo path or URL (overrides configcenter.yaml); a relative path is "
    "relative to the current directory.",
)
@click.option(
    "--run-store",
    metavar="URL",
    envvar="CONFIGCENTER_RUN_STORE",
    show_envvar=True,
    help="sqlite:///path or postgresql://... for runs.",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar="CONFIGCENTER_STRICT",
    show_envvar=True,
    help="Treat warnings as errors.",
)
@click.version_option(package_name="configcenter")
@click.pass_context
def cli(
    ctx: click.Context,
    config_dir: Path | None,
    deploy_repo: str | None,
    run_store: str | None,
    strict: bool,
) -> None:
    """configcenter: plan, render, commit, build, roll out and roll back services
    across environments, from templates and values kept in a Git config repo."""
    if config_dir is None:
        config_dir = find_config_repo(Path.cwd()) or Path(".")
    if deploy_repo and not is_remote_url(deploy_repo):
        # A path on the command line is relative to where the user is, not to -C.
        deploy_repo = str(Path(deploy_repo).expanduser().resolve())
    ctx.obj = Workspace(config_dir, deploy_repo, run_store, strict)
    ctx.call_on_close(ctx.obj.close)


pass_ws = click.make_pass_decorator(Workspace)


def json_option(fn: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="One JSON object on stdout, on failure too ({ok: false, problems: [...]}).",
    )(fn)


# -- shell completion: environment and service names from the config repo -----------------


def _completion_root(ctx: click.Context) -> Path | None:
    root = ctx.find_root()
    config_dir = root.params.get("config_dir") if root.params else None
    if config_dir:
        return Path(config_dir)
    env_dir = os.environ.get("CONFIGCENTER_CONFIG_REPO")
    return Path(env_dir) if env_dir else find_config_repo(Path.cwd())


def complete_envs(ctx: click.Context, incomplete: str) -> list[str]:
    """Environment names of the config repo (from configcenter.yaml, without loading it all)."""
    root = _completion_root(ctx)
    if root is None:
        return []
    from configcenter.core.errors import ProblemList as Problems
    from configcenter.core.yamldoc import parse_yaml

    try:
        raw = (root / "configcenter.yaml").read_text()
    except OSError:
        return []
    doc = parse_yaml(raw, "configcenter.yaml", Problems())
    envs = doc.data.get("environments") if doc is not None and isinstance(doc.data, dict) else None
    if not isinstance(envs, list):
        return []
    return [str(e) for e in envs if str(e).startswith(incomplete)]


def complete_services(ctx: click.Context, incomplete: str) -> list[str]:
    """Services of the environment on the command line (else of every environment)."""
    root = _completion_root(ctx)
    if root is None:
        return []
    env = ctx.params.get("env") or ctx.params.get("source")
    base = root / "environments"
    dirs = [base / env] if isinstance(env, str) else [p for p in base.glob("*") if p.is_dir()]
    names = {p.stem for d in dirs for p in d.glob("*.yaml") if not p.name.startswith("_")}
    return sorted(n for n in names if n.startswith(incomplete))


@cli.command()
@json_option
@pass_ws
@handle_errors
def validate(ws: Workspace, as_json: bool) -> None:
    """Load and check everything; render every service in every environment."""
    from configcenter.usecases.inspect import validate as run_validate

    report = run_validate(ws)
    if as_json:
        emit(
            {
                "environments": report.environments,
                "services": report.services,
                "warnings": [problem_json(w) for w in report.warnings],
            }
        )
        return
    if report.warnings:  # rich (~0.1 s to import) only when there is something to print
        from configcenter.output import print_problems

        print_problems(report.warnings)
    click.echo(
        click.style("ok", fg="green") + f": {report.environments} environments, "
        f"{report.services} service configs, {report.renders} rendered, "
        f"{len(report.warnings)} warning(s)"
    )


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("service", shell_complete=lambda c, p, i: complete_services(c, i))
@click.argument("key", required=False)
@json_option
@pass_ws
@handle_errors
def explain(ws: Workspace, env: str, service: str, key: str | None, as_json: bool) -> None:
    """Merged values of SERVICE in ENV, each with the file:line it came from."""
    ws.focus = (env,)
    from configcenter.core.values import masked
    from configcenter.usecases.inspect import explain as run_explain

    rows = run_explain(ws, env, service, key)
    if as_json:
        emit(
            {
                "env": env,
                "service": service,
                "values": [
                    {
                        "key": r.key,
                        "value": masked(r.entry.value),
                        "source": str(r.entry.source),
                        "layer": r.entry.layer,
                        "overrides": [
                            {"value": masked(o.value), "source": str(o.source), "layer": o.layer}
                            for o in r.entry.overrode
                        ],
                        "consumed": r.consumed,
                    }
                    for r in rows
                ],
            }
        )
        return
    from configcenter.output import print_explain

    print_explain(rows, env, service)


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    help="Only this service (repeatable).",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write files to DIR/<service>/<file> instead of printing them.",
)
@json_option
@pass_ws
@handle_errors
def render(
    ws: Workspace, env: str, services: tuple[str, ...], out: Path | None, as_json: bool
) -> None:
    """Render ENV's files as apply would, without side effects."""
    ws.focus = (env,)
    from configcenter.usecases.inspect import render_env
    from configcenter.usecases.render_out import write_rendered

    result = render_env(ws, env, services or None)
    rendered = result.rendered
    written = write_rendered(rendered, out) if out is not None else []
    if as_json:
        emit(
            {
                "env": env,
                "warnings": [problem_json(w) for w in result.warnings],
                "services": [
                    {
                        "service": item.service,
                        "image": result.images.get(item.service),
                        "files": {
                            name: data.decode("utf-8", "replace")
                            for name, data in item.files.items()
                        },
                    }
                    for item in rendered
                ],
                "written": [str(p) for p in written],
            }
        )
        return
    if result.warnings:  # rich (~0.1 s to import) only when there is something to print
        from configcenter.output import print_problems

        print_problems(result.warnings)
    if out is not None:
        click.echo(f"wrote {len(written)} files for {len(rendered)} services to {out}")
        return
    for item in rendered:
        for name, data in item.files.items():
            click.echo(f"# ---- {env}/{item.service}/{name}")
            click.echo(data.decode("utf-8", "replace"), nl=False)


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    help="Only this service (repeatable).",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@json_option
@click.option("--exit-code", is_flag=True, help="Exit 2 when there are changes.")
@click.option("--retry", multiple=True, help="Plan SERVICE even though its inputs failed before.")
@click.option(
    "--full", is_flag=True, help="Show every value and unchanged services, not only changes."
)
@pass_ws
@handle_errors
def plan(
    ws: Workspace,
    env: str,
    services: tuple[str, ...],
    as_json: bool,
    exit_code: bool,
    retry: tuple[str, ...],
    full: bool,
) -> None:
    """What apply would do in ENV, and why.

    Prints what changes: values changed/added/removed and rendered file diffs
    (--full: everything). With --json, one object: env, services (action,
    reasons, template, image, values, files), warnings, unverified images.
    """
    ws.focus = (env,)
    ws.read_only = True  # git network steps use deploy_repo.plan_timeout
    from configcenter.usecases.inspect import plan_env_checked
    from configcenter.usecases.observe import converge_observed

    checked = plan_env_checked(ws, env, only=services or None, retry=retry)
    observing: list[Problem] = []  # a platform not observed: --json says so too

    def warn(text: str) -> None:
        observing.append(Problem(Source(""), text, severity="warning"))
        if not as_json:
            warn_line(text)

    live: dict[str, LiveServices] = {}
    converged = converge_observed(
        ws, env, checked.plan, only=services or None, warn=warn, seen=live
    )
    result = converged.plan
    warnings = list(checked.warnings) + (observing if as_json else [])
    if result.changes:  # apply's checks of what it would roll out (its modules: ~6 ms)
        from configcenter.usecases.apply.guard import held_warnings, secrets_warnings

        warnings += secrets_warnings(ws, env, converged, live)
        # Workloads a deployment in progress holds, on the platforms observed just now.
        warnings += held_warnings(ws, env, converged, live)
    if checked.plan.changes:  # the config changes apply's stale-clone guard looks at
        from configcenter.usecases.apply.guard import stale_config_warnings

        warnings += stale_config_warnings(ws, env, checked.plan.changes)
    if as_json:
        emit(
            {
                **result.to_json(),
                "unverified": checked.unverified,
                "warnings": [problem_json(w) for w in warnings],
            }
        )
    else:
        from configcenter.output import print_plan, print_problems

        print_problems(warnings)
        print_plan(result, full=full, unverified=checked.unverified)
    if exit_code and result.changes:
        sys.exit(EXIT_CHANGES)


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--project", metavar="NAME", help="Project name (default: the directory's name).")
@click.option(
    "--service", "service", default="hello", show_default=True, help="The example service."
)
@click.option(
    "--deploy-repo",
    "deploy_repo",
    metavar="PATH",
    type=click.Path(file_okay=False, path_type=Path),
    help="Bare deploy repo to create (default: DIR-deploy.git next to DIR).",
)
@json_option
@handle_errors
def init(
    directory: Path | None,
    project: str | None,
    service: str,
    deploy_repo: Path | None,
    as_json: bool,
) -> None:
    """Scaffold a config repo in DIR (default: the current directory, if empty).

    One service with a released template (SERVICE/0.1.0), environments dev and prod
    pinning it, and an empty bare deploy repo. It validates, plans and applies as
    generated: cd DIR && configcenter plan dev && configcenter apply dev --no-rollout
    """
    from configcenter.usecases.init_repo import init_repo

    made = init_repo(directory or Path.cwd(), project, service, deploy_repo)
    if as_json:
        emit(
            {
                "root": str(made.root),
                "deploy_repo": str(made.deploy_repo),
                "files": made.files,
                "tag": made.tag,
                "commit": made.commit,
            }
        )
        return
    click.echo(f"created config repo {made.root} (commit {made.commit[:10]}, tag {made.tag})")
    for rel in made.files:
        click.echo(f"  {rel}")
    click.echo(f"created deploy repo {made.deploy_repo} (bare, empty)")
    click.echo("next:")
    click.echo(f"  cd {made.root}")
    click.echo("  configcenter validate")
    click.echo("  configcenter plan dev")
    click.echo("  configcenter apply dev --no-rollout   # render and commit; no cluster needed")


@cli.command()
@click.argument(
    "envs", nargs=-1, metavar="[ENV]...", shell_complete=lambda c, p, i: complete_envs(c, i)
)
@json_option
@pass_ws
@handle_errors
def services(ws: Workspace, envs: tuple[str, ...], as_json: bool) -> None:
    """Services per environment: template tag, image, platform, replicas, deployed release.

    DEPLOYED is the release the deploy repo holds (the one the platform runs) and its
    outcome; a service whose newest release failed adds "blocked: RELEASE OUTCOME".
    ENV... limits the list (default: every environment).
    """
    from configcenter.usecases.compare import list_services

    if envs:
        ws.focus = envs
    chosen = list(envs) or list(ws.config.project.environments)
    rows = list_services(ws, chosen)
    warnings = ws.problems.warnings
    if as_json:
        emit(
            {
                "environments": chosen,
                "services": [r.to_json() for r in rows],
                "warnings": [problem_json(w) for w in warnings],
            }
        )
        return
    from configcenter.output import print_problems, print_table

    print_problems(warnings)

    print_table(
        None,
        ("ENV", "SERVICE", "TEMPLATE", "IMAGE", "PLATFORM", "REPLICAS", "DEPLOYED"),
        [
            (
                r.env,
                r.service,
                r.template,
                r.image or "-",
                f"{r.platform} ({r.platform_kind})" if r.platform else "-",
                "per node" if r.per_node else "auto" if r.replicas is None else str(r.replicas),
                _deployed_cell(r.deployed),
            )
            for r in rows
        ],
    )


def _deployed_cell(deployed: dict[str, Any] | None) -> str:
    """`services`' DEPLOYED: the release the deploy repo holds, its outcome, and the newest
    release that failed when it is blocked."""
    if not deployed:
        return "-"
    text = f"{deployed['release']} {deployed['outcome']}".strip()
    blocked = deployed.get("blocked")
    if not blocked:
        return text
    if blocked["release"] == deployed["release"]:
        return f"{text}, blocked"
    return f"{text}; blocked: {blocked['release']} {blocked['outcome']}"


@cli.command("diff")
@click.argument("left", metavar="ENV1", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("right", metavar="ENV2", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    "services_",
    multiple=True,
    help="Only this service (repeatable).",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@json_option
@pass_ws
@handle_errors
def diff_cmd(
    ws: Workspace, left: str, right: str, services_: tuple[str, ...], as_json: bool
) -> None:
    """What differs between two environments: pins, values, rendered files.

    Template tags, images, replicas, values by key (with the file:line each came from on
    each side) and rendered file diffs. Secrets are masked.
    """
    from configcenter.usecases.compare import diff_envs

    result = diff_envs(ws, left, right, services_)
    if as_json:
        emit(result.to_json())
        return
    from configcenter.output import print_env_diff

    print_env_diff(result)


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("release")
@click.option("--files/--no-files", default=True, show_default=True, help="Print rendered files.")
@json_option
@pass_ws
@handle_errors
def show(ws: Workspace, env: str, release: str, files: bool, as_json: bool) -> None:
    """One release of ENV (an id from `history`), with its files.

    Outcome, template, image, replicas, values (secrets masked) and rendered files, as
    the deploy repo recorded them.
    """
    ws.focus = (env,)
    from configcenter.usecases.compare import find_release

    view = find_release(ws, env, release)
    if as_json:
        emit(view.to_json(with_files=files))
        return
    from configcenter.output import print_release

    print_release(view, files)


@cli.group()
def template() -> None:
    """Template versions (Git tags <service>/<version>)."""


@template.command("release")
@click.argument("args", nargs=-1, metavar="[SERVICE]... VERSION")
@click.option(
    "--all", "all_", is_flag=True, help="Release every template in templates/ as VERSION."
)
@click.option("--dry-run", is_flag=True, help="Validate only; create no tag.")
@click.option(
    "--push/--no-push",
    default=True,
    show_default=True,
    help="Push the new tags to the config repo's remote (when it has one).",
)
@json_option
@pass_ws
@handle_errors
def template_release(
    ws: Workspace, args: tuple[str, ...], all_: bool, dry_run: bool, push: bool, as_json: bool
) -> None:
    """Validate templates/SERVICE as committed and tag it SERVICE/VERSION.

    Several services (or --all) are released together: environments are checked as if
    every new tag existed, so a fresh repo whose environments already pin VERSION can
    release its first templates in one step:
    configcenter template release --all 1.0.0
    """
    from configcenter.output import out
    from configcenter.usecases.release_template import (
        all_templates,
        push_tags,
        release_templates,
        tag_remote,
    )

    if not args:
        raise click.UsageError("missing VERSION")
    *services, version = args
    if all_ and services:
        raise click.UsageError("give SERVICE names or --all, not both")
    if not all_ and not services:
        raise click.UsageError("missing SERVICE (or --all)")
    chosen = all_templates(ws) if all_ else services
    released = release_templates(ws, chosen, version, dry_run=dry_run)
    tags = [r.tag for r in released]
    remote = tag_remote(ws)
    pushed = False
    if not dry_run and push and remote is not None:
        push_tags(ws, remote, tags)
        pushed = True
    if remote is None:
        advice = "the config repo has no remote: after `git remote add origin URL`, run " + (
            "git push origin " + " ".join(tags)
        )
    elif pushed:
        advice = f"pushed to {remote}"
    else:
        advice = f"not pushed: git push {remote} " + " ".join(tags)
    if as_json:
        emit(
            {
                "dry_run": dry_run,
                "released": [
                    {
                        "tag": r.tag,
                        "commit": r.commit,
                        "rendered_for": r.rendered_for,
                        "notes": [problem_json(n) for n in r.notes],
                    }
                    for r in released
                ],
                "remote": remote,
                "pushed": pushed,
            }
        )
        return
    verb = "would tag" if dry_run else "tagged"
    for r in released:
        for note in r.notes:
            out.print(f"[yellow]note[/yellow]: {note.source}: {note.message} ({note.hint})")
        envs = ", ".join(r.rendered_for) or "no environment"
        out.print(f"[green]{verb}[/green] {r.tag} at {r.commit[:10]} (rendered for {envs})")
    if not dry_run:
        from configcenter.output import err

        err.print(advice, markup=False, highlight=False)


RESULT_STYLE = {
    "healthy": "green",
    "committed": "green",
    "rolled_back": "yellow",
    "failed": "red",
    "skipped": "magenta",
    "blocked": "magenta",
    "noop": "dim",
    "dry-run": "dim",
}


def _print_results(results: list[Any]) -> None:
    from configcenter.output import print_table

    if not results:
        return
    print_table(
        "result",
        ("service", "action", "outcome", "release", "reason"),
        [(r.service, r.action, r.outcome, r.release or "", r.reason) for r in results],
        styles={2: RESULT_STYLE},
    )


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    "services",
    multiple=True,
    help="Only this service (repeatable).",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@click.option("--no-build", is_flag=True, help="Do not build images; fail if one is needed.")
@click.option("--no-rollout", is_flag=True, help="Commit to the deploy repo only.")
@click.option(
    "--retry", multiple=True, metavar="SERVICE", help="Deploy SERVICE although it failed."
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Cancel a deployment that holds an app (Marathon 409).")
@click.option(
    "--allow-stale-config",
    is_flag=True,
    help="Apply a config commit older than (or diverged from) the one last applied; recorded.",
)
@click.option(
    "--skip-verify",
    is_flag=True,
    help="Emergencies: no verification after rollout (recorded in the commit and the run).",
)
@click.option("--jobs", "-j", default=2, show_default=True, help="Parallel builds/rollouts.")
@json_option
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
    allow_stale_config: bool,
    skip_verify: bool,
    jobs: int,
    as_json: bool,
    verbose: bool,
) -> None:
    """Commit ENV's plan to the deploy repo, build, roll out, verify, roll back on failure.

    With --json, one object: env, run, commit (the deploy repo commit of the new releases),
    rollback_commit (the commit that rolled a failed release back to its last good one, which
    the deploy repo holds after commit; null when nothing was rolled back), dry_run, plan,
    results (service, action, outcome, release, reason), exit_code.
    """
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
        override=allow_stale_config,
        skip_verify=skip_verify,
    )
    reporter = QuietReporter() if as_json else PrintingReporter(verbose)
    result = apply_env(ws, env, options, reporter)
    if as_json:
        failure = {}
        if result.exit_code:  # a failure object like any other, with the results
            failure = {"command": "apply", "problems": _result_problems(env, result.results)}
        emit(
            {
                **failure,
                "env": env,
                "run": result.run_id,
                "commit": result.commit,
                "rollback_commit": result.rollback_commit,
                "dry_run": result.dry_run,
                "plan": result.plan.to_json(),
                "results": [r.__dict__ for r in result.results],
                "exit_code": result.exit_code,
            },
            ok=result.exit_code == 0,
        )
    elif not dry_run:
        _print_results([r for r in result.results if r.outcome != "noop"])
        if result.commit:
            click.echo(f"deploy repo commit {result.commit[:10]} (run {result.run_id})")
        if result.rollback_commit:
            back = [r.service for r in result.results if r.outcome == "rolled_back"]
            click.echo(
                f"rollback: deploy repo commit {result.rollback_commit[:10]} restored "
                + (f"the last good release of {', '.join(back)}" if back else "earlier files")
                + ("" if result.commit else f" (run {result.run_id})")
            )
    sys.exit(result.exit_code)


def _result_problems(env: str, results: Sequence[Any]) -> list[dict[str, Any]]:
    """Each service that failed or was rolled back (what makes the exit code 1 or 3), as a
    `--json` problem."""
    return [
        problem_json(
            Problem(
                Source(""),
                f"{r.service}: {r.outcome} ({r.release}): {r.reason}",
                f"configcenter history {env} --service {r.service} shows why; change its "
                f"inputs or run apply --retry {r.service}",
            )
        )
        for r in results
        if r.outcome in ("failed", "rolled_back")
    ]


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("service", shell_complete=lambda c, p, i: complete_services(c, i))
@click.option("--dry-run", is_flag=True, help="Server-side dry run; change nothing.")
@click.option("--force", is_flag=True, help="Cancel a deployment that holds the app (Marathon).")
@json_option
@pass_ws
@handle_errors
def deploy(
    ws: Workspace, env: str, service: str, dry_run: bool, force: bool, as_json: bool
) -> None:
    """Roll out what the deploy repo says for SERVICE in ENV, alone.

    An app a deployment in progress holds (Marathon) is refused before anything is
    recorded or rolled out; --force cancels that deployment (Marathon's force=true).
    """
    from configcenter.output import PrintingReporter, QuietReporter

    ws.focus = (env,)
    from configcenter.usecases.apply import deploy_service

    reporter = QuietReporter() if as_json else PrintingReporter()
    result = deploy_service(ws, env, service, reporter, dry_run=dry_run, force=force)
    code = {"rolled_back": EXIT_ROLLED_BACK, "failed": EXIT_ERROR}.get(result.outcome, EXIT_OK)
    if as_json:
        failure = {"command": "deploy", "problems": _result_problems(env, [result])}
        emit(
            {**(failure if code else {}), "env": env, "result": result.__dict__, "exit_code": code},
            ok=code == 0,
        )
    else:
        _print_results([result])
    sys.exit(code)


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("service", shell_complete=lambda c, p, i: complete_services(c, i))
@click.option(
    "--to", "to", metavar="RELEASE", help="A release id from `history` (default: last good)."
)
@click.option("--no-rollout", is_flag=True, help="Restore the deploy repo only.")
@click.option("--dry-run", is_flag=True, help="Say what would be restored; change nothing.")
@click.option("--force", is_flag=True, help="Cancel a deployment that holds the app (Marathon).")
@json_option
@pass_ws
@handle_errors
def rollback(
    ws: Workspace,
    env: str,
    service: str,
    to: str | None,
    no_rollout: bool,
    dry_run: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Back to the last good (or named) release: image and config, as a new commit.

    An app a deployment in progress holds (Marathon) is refused before anything is
    committed or rolled out; --force cancels that deployment (Marathon's force=true).
    """
    from configcenter.output import PrintingReporter, QuietReporter

    ws.focus = (env,)
    from configcenter.usecases.apply import rollback_service

    result = rollback_service(
        ws,
        env,
        service,
        to,
        rollout=not no_rollout,
        dry_run=dry_run,
        reporter=QuietReporter() if as_json else PrintingReporter(),
        force=force,
    )
    if as_json:
        emit({"env": env, "dry_run": dry_run, "result": result.__dict__})
        return
    verb = "would roll back" if dry_run else "rolled back"
    click.echo(f"{service} in {env}: {verb} to {result.release} ({result.outcome})")


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    help="Only this service.",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@click.option("--limit", default=50, show_default=True, help="How many releases.")
@click.option(
    "--diff",
    "diff",
    nargs=2,
    metavar="A B",
    help="What changed from release A to release B.",
)
@json_option
@pass_ws
@handle_errors
def history(
    ws: Workspace,
    env: str,
    service: str | None,
    limit: int,
    diff: tuple[str, str] | None,
    as_json: bool,
) -> None:
    """Releases in ENV, newest first: deploy repo commits joined with runs.

    --diff A B shows what changed from release A to release B: template, image,
    replicas, values by key (secrets masked) and rendered file diffs.
    """
    ws.focus = (env,)
    if diff:
        from configcenter.usecases.compare import diff_releases

        changes = diff_releases(ws, env, *diff)
        if as_json:
            emit(changes.to_json())
            return
        from configcenter.output import print_release_diff

        print_release_diff(changes)
        return
    from configcenter.usecases.history import history as run_history

    entries = run_history(ws, env, service, limit, warn=warn_line)
    if not as_json:
        from configcenter.output import print_problems

        print_problems(ws.problems.warnings)  # e.g. a run store that cannot be read
    if service is not None and not entries:
        from configcenter.usecases.inspect import check_service_known

        check_service_known(ws, env, service)  # a typo is an error, not "no releases"
    if as_json:
        emit({"env": env, "service": service, "releases": [e.__dict__ for e in entries]})
        return
    if not entries:
        click.echo(f"no releases in {env}" + (f" for {service}" if service else "") + " yet")
        return
    from configcenter.output import print_table

    rows = []
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
                e.reason,
            )
        )
    print_table(
        None,
        ("RELEASE", "AT", "OUTCOME", "TEMPLATE", "VALUES", "COMMIT", "BY", "IMAGE", "REASON"),
        rows,
        styles={2: RESULT_STYLE},
    )


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("service", shell_complete=lambda c, p, i: complete_services(c, i))
@click.option("--verbose", "-v", is_flag=True, help="Stream build output.")
@click.option("--dry-run", is_flag=True, help="Say whether a build is needed; build nothing.")
@json_option
@pass_ws
@handle_errors
def build(
    ws: Workspace, env: str, service: str, verbose: bool, dry_run: bool, as_json: bool
) -> None:
    """Build SERVICE's image for ENV if its inputs changed, and push it."""
    from configcenter.output import PrintingReporter, QuietReporter

    ws.focus = (env,)
    from configcenter.usecases.build_service import build_service

    reporter = QuietReporter() if as_json else PrintingReporter(verbose)
    outcome = build_service(ws, env, service, reporter.build_log, dry_run)
    if as_json:
        emit(
            {
                "env": env,
                "service": service,
                "reference": outcome.reference,
                "built": outcome.built,
                "would_build": outcome.would_build,
            }
        )
        return
    if outcome.would_build:
        click.echo(f"{service}: would build {outcome.reference} (inputs changed)")
        return
    state = "built and pushed" if outcome.built else "image up to date"
    click.echo(f"{service}: {state}: {outcome.reference}")


@cli.command()
@click.argument("env", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option("--heal", is_flag=True, help="Re-apply the deploy repo's state where it drifted.")
@json_option
@click.option("--exit-code", is_flag=True, help="Exit 2 when drift was found.")
@pass_ws
@handle_errors
def reconcile(ws: Workspace, env: str, heal: bool, as_json: bool, exit_code: bool) -> None:
    """Report (and with --heal, fix) drift between ENV's platform and the deploy repo."""
    ws.focus = (env,)  # the other environments' files are not read
    from configcenter.output import PrintingReporter, QuietReporter
    from configcenter.usecases.reconcile import reconcile as run_reconcile

    reporter = QuietReporter() if as_json else PrintingReporter()
    report = run_reconcile(ws, env, heal=heal, reporter=reporter)
    code = EXIT_OK
    if report.outcome in ("failed", "rolled_back"):
        code = EXIT_ROLLED_BACK if report.outcome == "rolled_back" else EXIT_ERROR
    elif exit_code and report.has_drift:
        code = EXIT_CHANGES
    if as_json:
        emit({**report.to_json(), "exit_code": code}, ok=code in (EXIT_OK, EXIT_CHANGES))
    else:
        from configcenter.output import out, print_table

        if report.has_drift:
            print_table(
                f"drift in {env}",
                ("service", "field", "desired", "live"),
                [
                    tuple(x or "-" for x in (d.service, d.field, d.desired, d.live))
                    for d in report.drifts
                ],
            )
        else:
            out.print(f"[green]no drift[/green] in {env} ({len(report.services)} service(s))")
        _print_results(report.healed)
    sys.exit(code)


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

    gc.set_threshold(*DEFAULT_GC_THRESHOLD)  # a server's heap turns over: collect as usual
    gc.enable()

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
@click.argument("source", metavar="FROM", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.argument("target", metavar="TO", shell_complete=lambda c, p, i: complete_envs(c, i))
@click.option(
    "--service",
    "-s",
    help="Only this service (branch promote/FROM-to-TO/SERVICE).",
    shell_complete=lambda c, p, i: complete_services(c, i),
)
@click.option("--dry-run", is_flag=True, help="Print the merge request; change nothing.")
@click.option(
    "--allow-downgrade",
    is_flag=True,
    help="Go ahead when a pin is older than what TO pins now (refused without it).",
)
@json_option
@pass_ws
@handle_errors
def promote(
    ws: Workspace,
    source: str,
    target: str,
    service: str | None,
    dry_run: bool,
    allow_downgrade: bool,
    as_json: bool,
) -> None:
    """Open (or update) a merge request carrying FROM's last good pins to TO.

    A pin older than what TO pins now (a lower template or image version, or what FROM
    released after the release carried, e.g. before a rollback in FROM) is a downgrade:
    promote refuses it unless --allow-downgrade; --dry-run shows it.
    """
    from configcenter.usecases.promote import promote as run_promote

    result = run_promote(
        ws, source, target, service=service, dry_run=dry_run, allow_downgrade=allow_downgrade
    )
    if as_json:
        emit(result.to_json())
        return
    if result.status == "dry-run":
        for pin in result.pins:
            for down in pin.downgrades:
                click.echo(f"downgrade: {pin.service}: {down}", err=True)
        click.echo(f"title:   {'Draft: ' if result.draft else ''}{result.title}")
        click.echo(f"branch:  {result.branch} -> {result.target_branch}")
        click.echo(f"labels:  {', '.join(result.labels)}")
        click.echo("\n" + result.description)
    click.echo(result.message)


#: A command that runs longer than this (a rollout's wait) gets a full collection this often.
COMMAND_GC_EVERY = 30.0


def _collect_while_running(every: float = COMMAND_GC_EVERY) -> None:
    """Full collections every `every` seconds from a daemon thread, while the collector is
    off (a long command's reference cycles are freed; a short command never sees one)."""
    import threading
    import time

    def collect() -> None:
        while True:
            time.sleep(every)
            if not gc.isenabled():
                gc.collect()

    threading.Thread(target=collect, name="configcenter-gc", daemon=True).start()


def main() -> None:
    # A command builds its data once and frees it at exit; reference counting frees the
    # rest. The cycle collector only walked the growing heap finding nothing to free: with
    # the default thresholds a dozen full passes, 1.3 s of CPU of a 5,000-service plan, and
    # still ~0.2 s of young passes with a 50,000 threshold (peak memory of plan, validate
    # and render the same either way). `serve` runs for days and turns it back on.
    gc.disable()
    _collect_while_running()
    try:
        cli(prog_name="configcenter")
    finally:
        # At exit Python collects once more, over the whole heap, for cycles (~1.3 s of CPU
        # after a cold validate at 5,000 services): what the command built is left out of it.
        gc.freeze()
