"""The config and CLI references in docs/, generated so they cannot drift.

The config reference walks the schema (`configcenter.core.schema`, with the adapter
kinds of `configcenter.core.kinds`): every key that validation accepts is listed with
its type, whether it is required, and its default. A key added to the schema appears
here without an edit; DESCRIPTIONS only adds prose. The CLI reference walks the click
commands. `scripts/gen-docs` writes both; a test fails when docs/ is stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import click

from configcenter.core import kinds, schema

CONFIG_DOC = "docs/reference/config.md"
CLI_DOC = "docs/reference/cli.md"

FILES: tuple[tuple[str, str, schema.Spec, str], ...] = (
    (
        "configcenter.yaml",
        "configcenter.yaml",
        schema.PROJECT,
        "The project file at the top of the config repo.",
    ),
    (
        "templates/SERVICE/template.yaml",
        "template.yaml",
        schema.TEMPLATE,
        "One service's template: what it renders and what it needs. Read from the tag "
        "an environment pins (`SERVICE/VERSION`), or from the work tree for `HEAD`.",
    ),
    (
        "environments/_defaults.yaml",
        "_defaults.yaml",
        schema.DEFAULTS,
        "Values every environment starts from (the lowest layer).",
    ),
    (
        "environments/ENV/_env.yaml",
        "_env.yaml",
        schema.ENVIRONMENT,
        "Settings of one environment, and its values (the middle layer).",
    ),
    (
        "environments/ENV/SERVICE.yaml",
        "service file",
        schema.SERVICE,
        "One service in one environment: the template tag it pins, its image, its values "
        "(the top layer).",
    ),
)

# (file label, dotted key) -> (description, default). Prose only: which keys exist, their
# types and whether they are required come from the schema.
DESCRIPTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("configcenter.yaml", "project"): ("Project name; templates see it as `project`.", ""),
    ("configcenter.yaml", "environments"): (
        "Environment names in promotion order (`dev -> demo -> prod`); each has a folder "
        "under environments/.",
        "",
    ),
    ("configcenter.yaml", "deploy_repo"): ("Where rendered files are committed.", ""),
    ("configcenter.yaml", "deploy_repo.url"): (
        "Git URL or path of the deploy repo; a relative path is relative to the config "
        "repo. `--deploy-repo` / `CONFIGCENTER_DEPLOY_REPO` override it.",
        "",
    ),
    ("configcenter.yaml", "deploy_repo.branch"): ("Branch of the deploy repo.", "`main`"),
    ("configcenter.yaml", "registry"): (
        "The project's own image registry: built images are pushed here, given images on "
        "it are pinned by digest.",
        "",
    ),
    ("configcenter.yaml", "registry.url"): ("Registry host[:port].", ""),
    ("configcenter.yaml", "registry.insecure"): ("Plain HTTP instead of HTTPS.", "`false`"),
    ("configcenter.yaml", "registry.username"): ("Registry user.", "none (anonymous)"),
    ("configcenter.yaml", "registry.password"): ("Registry password.", "none"),
    ("configcenter.yaml", "registry.pin_digests"): (
        "Deploy given images on this registry by digest (`repo:tag@sha256:...`); `false` "
        "deploys tags as written.",
        "`true`",
    ),
    ("configcenter.yaml", "builder"): ("How images are built from source.", "buildah"),
    ("configcenter.yaml", "builder.kind"): ("The builder.", "`buildah`"),
    ("configcenter.yaml", "builder.storage_driver"): (
        "buildah `--storage-driver`.",
        "`vfs`",
    ),
    ("configcenter.yaml", "builder.isolation"): ("buildah `--isolation`.", "`chroot`"),
    ("configcenter.yaml", "builder.push_secret"): (
        "A kubernetes.io/dockerconfigjson Secret the Kaniko Job pushes with.",
        "none",
    ),
    ("configcenter.yaml", "builder.fetch_source"): (
        "`auto`, `always` or `never`: whether the Job's init container clones the source "
        "(else the context travels in a ConfigMap).",
        "`auto`",
    ),
    ("configcenter.yaml", "builder.git_image"): ("Image of the clone init container.", ""),
    ("configcenter.yaml", "builder.context"): ("kubeconfig context of the Kaniko cluster.", ""),
    ("configcenter.yaml", "builder.kubeconfig"): ("kubeconfig of the Kaniko cluster.", ""),
    ("configcenter.yaml", "builder.namespace"): ("Namespace of the Kaniko Jobs.", ""),
    ("configcenter.yaml", "platforms.NAME.secrets_url"): (
        "DC/OS secret store API, where secrets are written at deploy time.",
        "none",
    ),
    ("configcenter.yaml", "platforms.NAME.secret_store"): ("DC/OS secret store.", "`default`"),
    ("configcenter.yaml", "platforms.NAME.verify"): ("Verify TLS certificates.", "`true`"),
    ("configcenter.yaml", "platforms.NAME.files_url"): (
        "`configcenter serve` as Mesos agents reach it: tasks fetch their config files from "
        "signed URLs under it.",
        "none (config files cannot be delivered)",
    ),
    ("configcenter.yaml", "platforms.NAME.files_key"): (
        "The key that signs those URLs; the same secret as `serve.files_key`.",
        "none",
    ),
    ("configcenter.yaml", "serve.files_key"): (
        "The key serve checks file URL signatures with (a platform's `files_key`).",
        "",
    ),
    ("configcenter.yaml", "builder.jobs"): ("Builds at once.", "`--jobs` of apply"),
    ("configcenter.yaml", "platforms"): (
        "Named targets; an environment (or a service) picks one by name.",
        "",
    ),
    ("configcenter.yaml", "platforms.NAME.kind"): ("Which platform adapter.", ""),
    ("configcenter.yaml", "platforms.NAME.namespace"): (
        "Kubernetes namespace; may use `{{ env }}` and `{{ project }}`.",
        "the kubeconfig context's namespace",
    ),
    ("configcenter.yaml", "platforms.NAME.context"): (
        "kubeconfig context.",
        "the current context",
    ),
    ("configcenter.yaml", "platforms.NAME.kubeconfig"): (
        "kubeconfig file.",
        "`$KUBECONFIG`, else `~/.kube/config`",
    ),
    ("configcenter.yaml", "platforms.NAME.url"): ("Marathon URL.", ""),
    ("configcenter.yaml", "platforms.NAME.group"): (
        "Marathon group of the apps; may use `{{ env }}`.",
        "",
    ),
    ("configcenter.yaml", "platforms.NAME.token"): ("API token (a secret reference).", "none"),
    ("configcenter.yaml", "forge"): (
        "Where promotion merge requests are opened.",
        "`{kind: local}`",
    ),
    ("configcenter.yaml", "forge.kind"): ("Which forge.", ""),
    ("configcenter.yaml", "forge.url"): ("GitLab URL.", ""),
    ("configcenter.yaml", "forge.project"): ("GitLab project, by path or id.", ""),
    ("configcenter.yaml", "forge.token"): ("GitLab API token.", ""),
    ("configcenter.yaml", "forge.webhook_token"): ("GitLab webhook secret token.", ""),
    ("configcenter.yaml", "promotion"): ("Rules for `promote`.", ""),
    ("configcenter.yaml", "promotion.allow_skip"): (
        "Allow promoting past an environment (dev -> prod).",
        "`false`",
    ),
    ("configcenter.yaml", "promotion.approvals"): (
        "Approvals written into the merge request.",
        "none",
    ),
    ("configcenter.yaml", "run_store"): ("Where runs are recorded.", ""),
    ("configcenter.yaml", "run_store.url"): (
        "`sqlite:///path` or `postgresql://...`; `--run-store` / `CONFIGCENTER_RUN_STORE` "
        "override it.",
        "`~/.local/state/configcenter/projects/<project>/runs.sqlite3`",
    ),
    ("configcenter.yaml", "serve"): ("Shared secrets of `configcenter serve`.", ""),
    ("configcenter.yaml", "serve.webhook_token"): (
        "GitLab's webhook secret token.",
        "`forge.webhook_token`",
    ),
    ("configcenter.yaml", "serve.registry_token"): (
        "Bearer token of registry notifications.",
        "",
    ),
    ("configcenter.yaml", "serve.api_token"): ("Bearer token of the API and page.", ""),
    ("configcenter.yaml", "serve.basic_auth"): ("Optional browser login for the page.", ""),
    ("configcenter.yaml", "serve.public_url"): (
        "How users reach serve (`https://cc.example.com`): run links in notifications.",
        "",
    ),
    ("configcenter.yaml", "serve.notifications"): (
        "Channels told about failed, rolled back, blocked, drift and healed services, once per "
        "new fact: `kind: webhook` (JSON POST, optional bearer `token`), `slack` (incoming "
        "webhook; `url` must be a secret) or `email` (`smtp`, `from`, `to`).",
        "`[]`",
    ),
    ("configcenter.yaml", "serve.notifications.[].environments"): (
        "Only these environments.",
        "every environment",
    ),
    ("configcenter.yaml", "serve.notifications.[].events"): (
        "Only these events (failed, rolled_back, blocked, drift, healed).",
        "all",
    ),
    ("configcenter.yaml", "serve.actions"): (
        "The console's actions (apply an environment or a service, retry, roll back, heal "
        "drift, open a promotion); `false` keeps the console read-only, so changes come only "
        "through Git. Actions also need `serve.api_token` or `serve.basic_auth`.",
        "`true`",
    ),
    ("configcenter.yaml", "serve.poll_interval"): (
        "How often serve asks the config repo's upstream for new commits, the fallback to "
        "push webhooks (a lost delivery only delays an apply).",
        "`3m`",
    ),
    ("template.yaml", "outputs"): (
        "Files the template renders; each `NAME` comes from `NAME.j2` next to template.yaml "
        "(paths inside the service's folder may have folders).",
        "",
    ),
    ("template.yaml", "env"): (
        "The ENV list: keys every environment must give a value for. A value for a key not "
        "listed is a warning (an error with `--strict`).",
        "`[]`",
    ),
    ("template.yaml", "build"): ("Build the image from source (with `image.source`).", ""),
    ("template.yaml", "build.dockerfile"): ("Which output is the Dockerfile.", "`Dockerfile`"),
    ("template.yaml", "build.args"): ("Values passed as build args, by key.", "`[]`"),
    ("template.yaml", "build.context"): ("Build context inside the source repo.", "`.`"),
    ("template.yaml", "build.cache"): ("Use the registry build cache.", "`true`"),
    ("template.yaml", "depends_on"): (
        "Services rolled out before this one, in the same environment.",
        "`[]`",
    ),
    ("template.yaml", "description"): ("Free text.", ""),
    ("template.yaml", "hooks"): ("Release stages before the workload (Kubernetes Jobs).", ""),
    ("template.yaml", "hooks.pre_deploy"): (
        "Outputs run as Jobs, in this order, before the workload is applied; one that fails "
        "stops the release (outcome `failed`). Never applied as part of the workload.",
        "`[]`",
    ),
    ("template.yaml", "hooks.timeout"): (
        "How long each stage Job may run.",
        "the env's `rollout.timeout`",
    ),
    ("template.yaml", "hooks.retention"): (
        "Finished stage Jobs are deleted this long after they end.",
        "`24h`",
    ),
    ("template.yaml", "verify"): (
        "Checks once the pods are ready: a list of outputs run as Jobs (`[smoke.yaml]`), or "
        "`{jobs: [...], http: {...}}`. A failed check rolls back like a failed rollout.",
        "none",
    ),
    ("template.yaml", "verify.jobs"): ("Outputs run as verification Jobs.", "`[]`"),
    ("template.yaml", "verify.http"): (
        "GET every task of the release (Marathon, which has no Jobs).",
        "",
    ),
    ("template.yaml", "verify.http.path"): ("The path to GET, e.g. `/healthz`.", ""),
    ("template.yaml", "verify.http.expect_status"): ("The status each task answers.", "`200`"),
    ("template.yaml", "verify.http.timeout"): ("How long a task may take to answer.", "`30s`"),
    ("_defaults.yaml", "values"): ("Values (any YAML; maps merge key by key).", "`{}`"),
    ("_env.yaml", "platform"): ("The platform (a name under `platforms:`).", "none"),
    ("_env.yaml", "allow_head"): (
        "Services may pin `template: HEAD` (the work tree).",
        "`false`",
    ),
    ("_env.yaml", "auto_apply"): (
        "`serve` applies this environment on a push to the default branch.",
        "`false`",
    ),
    ("_env.yaml", "reconcile"): ("Scheduled drift check by `serve`.", "none"),
    ("_env.yaml", "reconcile.interval"): ("How often, e.g. `5m`.", ""),
    ("_env.yaml", "reconcile.heal"): ("Re-apply what drifted.", "`false`"),
    ("_env.yaml", "rollout"): ("Rollout settings.", ""),
    ("_env.yaml", "rollout.timeout"): (
        "How long a rollout may take (`90s`, `5m`, `1h`).",
        "`300s`",
    ),
    ("_env.yaml", "values"): ("Values of this environment.", "`{}`"),
    ("service file", "template"): (
        "The template tag (`1.4.0`, meaning tag `SERVICE/1.4.0`), or `HEAD` where "
        "`allow_head: true`.",
        "",
    ),
    ("service file", "image"): ("The image: given (`ref`) or built (`source`).", ""),
    ("service file", "image.ref"): ("Image reference to deploy.", ""),
    ("service file", "image.source"): ("Build the image from this source repo.", ""),
    ("service file", "image.source.repo"): ("Git URL or path of the source.", ""),
    ("service file", "image.source.ref"): ("Branch, tag or commit to build.", "`HEAD`"),
    ("service file", "image.source.context"): ("Build context inside the repo.", "`.`"),
    ("service file", "replicas"): (
        "Replicas (Kubernetes) or instances (Marathon); `auto` leaves them to an autoscaler "
        "(never set, never drift).",
        "`1`",
    ),
    ("service file", "platform"): ("Override the environment's platform.", "the env's"),
    ("service file", "values"): ("Values of this service here (the top layer).", "`{}`"),
    # Limits, names, durations and secret allowlists: docs/limits-and-safety.md.
    ("configcenter.yaml", "deploy_repo.timeout"): ("Git network steps give up after this.", "`5m`"),
    ("configcenter.yaml", "deploy_repo.plan_timeout"): ("The same for `plan`.", "`30s`"),
    ("configcenter.yaml", "limits"): ("Limits on YAML and templates (within bounds).", ""),
    ("configcenter.yaml", "limits.yaml_file_size"): ("One YAML file.", "`512KiB`"),
    ("configcenter.yaml", "limits.yaml_nodes"): (
        "Values of one document, aliases expanded.",
        "`50000`",
    ),
    ("configcenter.yaml", "limits.yaml_depth"): ("Nesting of one document.", "`64`"),
    ("configcenter.yaml", "limits.template_size"): ("One template source.", "`1MiB`"),
    ("configcenter.yaml", "limits.output_size"): ("One rendered file.", "`1MiB`"),
    ("configcenter.yaml", "limits.service_output_size"): ("A service's rendered files.", "`4MiB`"),
    ("configcenter.yaml", "limits.render_timeout"): ("Rendering one template file.", "`10s`"),
    ("configcenter.yaml", "secrets"): ("What `file:` and `k8s:` references may read.", ""),
    ("configcenter.yaml", "secrets.file.allow"): ("Globs of absolute paths.", "nothing"),
    ("configcenter.yaml", "secrets.k8s.allow"): ("Globs of `namespace/name`.", "nothing"),
}


@dataclass
class Row:
    key: str
    type: str
    required: bool
    kinds: str = ""  # which adapter kinds read this setting


def type_name(spec: schema.Spec) -> str:
    if isinstance(spec, schema.OneOf):
        return "one of " + ", ".join(f"`{c}`" for c in spec.choices)
    if isinstance(spec, schema.Int):
        return f"integer >= {spec.minimum}" if spec.minimum else "integer"
    if isinstance(spec, schema.Replicas):
        return "integer >= 0 or `auto`"
    if isinstance(spec, schema.Bool):
        return "boolean"
    if isinstance(spec, schema.SecretOrStr):
        return "string or secret reference" if spec.allow_plain else "secret reference"
    if isinstance(spec, schema.Str):
        return "string"
    if isinstance(spec, schema.ListOf):
        return f"list of {type_name(spec.item)}s"
    if isinstance(spec, schema.ListOrObj):
        return f"{type_name(spec.as_list)} or a mapping"
    if isinstance(spec, schema.MapOf):
        return "mapping of names" + (f" to {type_name(spec.item)}" if spec.item else "")
    if isinstance(spec, schema.ValueTree):
        return "values: any YAML, secrets as `{secret: ...}`"
    if isinstance(spec, schema.Name):
        return "name"  # a-z 0-9 -, like a DNS label: docs/limits-and-safety.md
    if isinstance(spec, schema.Duration):
        return f"duration ({spec.minimum:g}s .. {spec.maximum:g}s: `30s`, `5m`, `1h30m`)"
    if isinstance(spec, schema.Limit):
        from configcenter.core.limits import SETTINGS, human_size

        _, kind, low, high = SETTINGS[spec.setting]
        if kind == "size":
            return f"size ({human_size(low)} .. {human_size(high)}: `512KiB`, `4MiB`)"
        if kind == "duration":
            return f"duration ({low:g}s .. {high:g}s)"
        return f"integer ({int(low)} .. {int(high)})"
    return "mapping"


def _adapter_fields(block: schema.AdapterBlock) -> tuple[dict[str, schema.Spec], dict[str, str]]:
    """The keys an adapter block accepts (as its check builds them) and the kinds using each."""
    registry = kinds.REGISTRY
    fields: dict[str, schema.Spec] = {"kind": schema.OneOf(registry.kinds(block.port))}
    users: dict[str, list[str]] = {}
    for kind in registry.kinds(block.port):
        found = registry.find(block.port, kind)
        for key in found.settings if found else ():
            users.setdefault(key, []).append(kind)
    settings = registry.settings(block.port)
    for key, setting in settings.items():
        fields[key] = schema._SETTING_SPECS[setting]
    fields.update(block.common)
    return fields, {k: ", ".join(v) for k, v in users.items()}


def walk(spec: schema.Spec, prefix: str = "") -> Iterator[Row]:
    if isinstance(spec, schema.AdapterBlock):
        fields, users = _adapter_fields(spec)
        for key, item in fields.items():
            name = f"{prefix}{key}"
            yield Row(name, type_name(item), key in spec.required, users.get(key, ""))
            yield from walk(item, name + ".")
        return
    if isinstance(spec, schema.Obj):
        for key, item in spec.fields.items():
            name = f"{prefix}{key}"
            yield Row(name, type_name(item), key in spec.required)
            yield from walk(item, name + ".")
        return
    if isinstance(spec, schema.MapOf) and spec.item is not None:
        if isinstance(spec.item, schema.Obj | schema.AdapterBlock):
            yield from walk(spec.item, prefix + "NAME.")
        return
    if isinstance(spec, schema.ListOf) and isinstance(spec.item, schema.Obj):
        yield from walk(spec.item, prefix + "[].")
    if isinstance(spec, schema.ListOrObj):
        yield from walk(spec.as_map, prefix)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "<!-- Generated from configcenter/core/schema.py by scripts/gen-docs; do not edit. -->",
        "",
        "Every key configcenter accepts, by file. Unknown keys are errors (with a",
        '"did you mean"); `configcenter validate` checks them all and names the file and',
        'line of each problem. A secret reference is `{secret: "env:NAME"}`,',
        '`{secret: "file:/path"}` or `{secret: "k8s:namespace/name/key"}`; its value is',
        "resolved only at deploy time.",
        "",
        "Values layer `_defaults.yaml` < `ENV/_env.yaml` < `ENV/SERVICE.yaml`: maps merge",
        "key by key, anything else replaces. `configcenter explain ENV SERVICE` shows where",
        "each value came from.",
        "",
    ]
    for path, label, spec, intro in FILES:
        lines += [f"## {path}", "", intro, ""]
        lines += [
            "| key | type | required | default | description |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in walk(spec):
            description, default = DESCRIPTIONS.get((label, row.key), ("", ""))
            if not description and row.kinds:
                description = f"Setting of {row.kinds}."
            elif row.kinds and row.key.rsplit(".", 1)[-1] != "kind":
                description = f"{description} ({row.kinds})".strip()
            lines.append(
                f"| `{_cell(row.key)}` | {_cell(row.type)} | {'yes' if row.required else ''} "
                f"| {_cell(default)} | {_cell(description)} |"
            )
        lines.append("")
    lines += ["## Adapter kinds", "", "| port | kind | what |", "| --- | --- | --- |"]
    ports: tuple[kinds.Port, ...] = ("platform", "builder", "forge", "run_store", "secret_backend")
    for port in ports:
        for kind in kinds.REGISTRY.kinds(port):
            found = kinds.REGISTRY.find(port, kind)
            lines.append(f"| {port} | `{kind}` | {_cell(found.description if found else '')} |")
    lines.append("")
    return "\n".join(lines)


def _command_rows(
    group: click.Group, ctx: click.Context, prefix: str
) -> Iterator[tuple[str, click.Command, click.Context]]:
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield f"{prefix} {name}".strip(), command, sub
        if isinstance(command, click.Group):
            yield from _command_rows(command, sub, f"{prefix} {name}")


def cli_reference() -> str:
    from configcenter.cli import cli

    settings = {**cli.context_settings, "terminal_width": 100, "max_content_width": 100}
    root = click.Context(cli, info_name="configcenter", **settings)
    lines = [
        "# CLI reference",
        "",
        "<!-- Generated from the click commands (configcenter/cli.py) by scripts/gen-docs;",
        "     do not edit. -->",
        "",
        "Each section is the command's `--help`.",
        "",
        "## configcenter",
        "",
        "```",
        cli.get_help(root).rstrip(),
        "```",
        "",
    ]
    for path, command, ctx in _command_rows(cli, root, ""):
        ctx.terminal_width = ctx.max_content_width = 100
        lines += [f"## configcenter {path}", "", "```", command.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


def generated() -> dict[str, str]:
    """Path (relative to the repository) -> content."""
    return {CONFIG_DOC: config_reference(), CLI_DOC: cli_reference()}
