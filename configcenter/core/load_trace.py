"""A loaded config kept between runs, used again only while everything it read is unchanged.

`load_config` is a pure function of what it reads through `ConfigSource`. A
`TracingSource` records every read and a fingerprint of its answer (a digest of a
file's bytes, a directory listing, the tag map, a template tree's content id, the
refusal a link caused). A kept load is used again only when replaying that trace
against the source now gives the same fingerprint at every step: the verifying
traces of build systems. Nothing is keyed by time or guessed from a commit id: a
file edited in the work tree, a moved tag, a new service file, a link that replaced a
file each change a fingerprint, and the config is loaded afresh.

A template version named by a tag is a function of the tag's commit when the source
says so (`tagged_trees_immutable`: Git objects never change), so a replay does not
read template trees whose tags are unchanged; the kept `Template`s get a tree that
opens the source's own on first use. Work-tree (HEAD) templates are read again and
compared by content.

When the replay finds a change, the config is loaded again, but the kept load lends
it every service and tagged template whose own inputs did not change
(`configcenter.core.load.LoadMemo`): one edited service file among 5,000 builds one
service, not 5,000.

Only loads without errors are kept (a broken config is loaded, and reported, every
time); their warnings are kept with them and reported again.

A kept load is the config with each YAML document named by its index (a value layer
by its document), and each document's data and lines pickled apart (`_KeptDocs`),
unpickled only when something asks where a value came from (an error, a warning, a
value diff, `explain`). A no-op plan and a render never do, and the documents are half
of what a load holds. Each service's merged value tree is pickled apart the same way
(`_KeptTree`), unpickled when first read: a plan of services whose kept plan digests
match reads no values at all.
"""

from __future__ import annotations

import copyreg
import gc
import hashlib
import io
import pickle
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from configcenter.core.errors import Problem, ProblemList
from configcenter.core.load import LoadMemo, load_config
from configcenter.core.model import Config, Template
from configcenter.core.source import ConfigSource, FileTooLarge, RepoPathError, TemplateTree
from configcenter.core.values import Layer
from configcenter.core.yamldoc import YamlDoc

if TYPE_CHECKING:
    from configcenter.core.yamldoc import ParseCache

#: Bumped whenever what a trace records, or how a kept load is stored, changes.
FORMAT = 4

T = TypeVar("T")
Step = tuple[str, tuple[Any, ...], str]  # (call, its arguments, fingerprint of the answer)


class LoadStore(Protocol):
    """Where kept loads live between runs (one entry per key; the newest wins)."""

    @property
    def salt(self) -> str:
        """Names the code that loads: a different configcenter never uses a kept load."""
        ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pairs_print(pairs: Sequence[tuple[str, str]] | None) -> str:
    """A listing, a tag map's items or a tree's refusals, as one digest."""
    if pairs is None:
        return "none"
    return _digest("\n".join(f"{a}\0{b}" for a, b in pairs).encode())


def _refusal_print(exc: RepoPathError | FileTooLarge) -> str:
    if isinstance(exc, RepoPathError):
        return f"!path\0{exc.rel}\0{exc.kind}"
    return f"!large\0{exc.rel}\0{exc.size}\0{exc.limit}"


def _file_print(digest: str | None) -> str:
    return "none" if digest is None else digest


def _tree_print(tree: TemplateTree | None) -> str:
    if tree is None:
        return "none"
    return f"{tree.tree_id}\0{_pairs_print(tree.refused)}"


class TracingSource:
    """A `ConfigSource` that records what the loader read and what the answers were."""

    def __init__(self, inner: ConfigSource) -> None:
        self.inner = inner
        self.root = inner.root
        self.tagged_trees_immutable = bool(getattr(inner, "tagged_trees_immutable", False))
        self.steps: list[Step] = []
        self.traceable = True
        # Trees handed out, by identity, so a kept load can name them instead of pickling them.
        self._trees: dict[int, tuple[str, str | None, str, TemplateTree]] = {}

    @property
    def parse_cache(self) -> ParseCache | None:
        return self.inner.parse_cache

    def _answer(
        self, call: str, args: tuple[Any, ...], fn: Callable[[], T], fp: Callable[[T], str]
    ) -> T:
        try:
            result = fn()
        except (RepoPathError, FileTooLarge) as exc:
            self.steps.append((call, args, _refusal_print(exc)))
            raise
        except Exception:
            self.traceable = False
            raise
        self.steps.append((call, args, fp(result)))
        return result

    def read_file(self, rel: str, max_bytes: int) -> bytes | None:
        return self._answer(
            "read_file",
            (rel, max_bytes),
            lambda: self.inner.read_file(rel, max_bytes),
            lambda data: _file_print(None if data is None else _digest(data)),
        )

    def file_digest(self, rel: str, max_bytes: int) -> str | None:
        """sha256 hex of `read_file`'s answer, recorded as that read (the same fingerprint):
        the loader asks it before lending a service, so an unchanged file is never read."""
        inner: Callable[[str, int], str | None] | None = getattr(self.inner, "file_digest", None)
        if inner is None:
            data = self.read_file(rel, max_bytes)
            return None if data is None else _digest(data)
        return self._answer(
            "read_file", (rel, max_bytes), lambda: inner(rel, max_bytes), _file_print
        )

    def list_dir(self, rel: str) -> list[tuple[str, str]] | None:
        return self._answer("list_dir", (rel,), lambda: self.inner.list_dir(rel), _pairs_print)

    def path_kind(self, rel: str) -> str | None:
        return self._answer(
            "path_kind", (rel,), lambda: self.inner.path_kind(rel), lambda kind: str(kind)
        )

    def head_commit(self) -> str | None:
        return self._answer("head_commit", (), self.inner.head_commit, lambda c: str(c))

    def tags(self) -> Mapping[str, str]:
        return self._answer(
            "tags", (), self.inner.tags, lambda tags: _pairs_print(sorted(tags.items()))
        )

    def template_tree(self, service: str, tag: str | None) -> TemplateTree | None:
        tree = self._answer(
            "template_tree",
            (service, tag),
            lambda: self.inner.template_tree(service, tag),
            _tree_print,
        )
        if tree is not None:
            self._trees[id(tree)] = (service, tag, tree.tree_id, tree)
        return tree

    def tree_name(self, obj: object) -> tuple[str, str | None, str] | None:
        """How a kept load names a tree this source handed out (None: not one of them)."""
        found = self._trees.get(id(obj))
        if found is None or found[3] is not obj:
            return None
        return found[0], found[1], found[2]


class KeptTree:
    """A tagged template version of a kept load: the source's own tree, opened on first use.

    The tag was unchanged when the load was used again, so the tree is the one recorded;
    a no-op plan never reads it (the release record says what the version consumes).
    """

    def __init__(self, source: ConfigSource, service: str, tag: str | None, tree_id: str) -> None:
        self._source = source
        self._service = service
        self._tag = tag
        self._tree_id = tree_id
        self._inner: TemplateTree | None = None

    def _tree(self) -> TemplateTree:
        if self._inner is None:
            tree = self._source.template_tree(self._service, self._tag)
            if tree is None or tree.tree_id != self._tree_id:
                raise RuntimeError(
                    f"templates/{self._service}@{self._tag} changed while configcenter ran"
                )
            self._inner = tree
        return self._inner

    @property
    def tree_id(self) -> str:
        return self._tree_id

    def read(self, name: str) -> bytes | None:
        return self._tree().read(name)

    def has(self, name: str) -> bool:
        return self._tree().has(name)

    def files(self) -> Mapping[str, bytes]:
        return self._tree().files()

    @property
    def refused(self) -> Sequence[tuple[str, str]]:
        return self._tree().refused


def _replay(
    steps: list[Step], source: ConfigSource, immutable_tags: bool
) -> dict[tuple[str, str | None], TemplateTree] | None:
    """The trees read again (work-tree ones) when every step answers as recorded; else None."""
    trees: dict[tuple[str, str | None], TemplateTree] = {}
    checker = TracingSource(source)
    # A source may know a file's digest without reading it (the work tree: by its stat),
    # and check the directories on the way once for the whole replay.
    digester: Callable[[], Callable[[str, int], str | None]] | None = getattr(
        source, "file_digester", None
    )
    file_digest: Callable[[str, int], str | None] | None = (
        digester() if digester is not None else getattr(source, "file_digest", None)
    )
    for call, args, expected in steps:
        if call == "read_file" and file_digest is not None:
            try:
                answer = _file_print(file_digest(*args))
            except (RepoPathError, FileTooLarge) as exc:
                answer = _refusal_print(exc)
            except Exception:
                return None
            if answer != expected:
                return None
            continue
        if call == "template_tree" and immutable_tags and args[1] is not None:
            continue  # the tags step (same tag -> same commit -> same tree) covers it
        before = len(checker.steps)
        try:
            result = getattr(checker, call)(*args)
        except (RepoPathError, FileTooLarge):
            result = None
        except Exception:
            return None
        if len(checker.steps) == before or checker.steps[-1][2] != expected:
            return None
        if call == "template_tree" and result is not None:
            trees[(args[0], args[1])] = result
    return trees


def _templates(config: Config, memo: LoadMemo) -> list[Template]:
    unique = {
        id(s.template): s.template
        for env in config.environments.values()
        for s in env.services.values()
    }
    unique.update({id(s.template): s.template for _, s in memo.services.values()})
    unique.update({id(t): t for _, t in memo.templates.values()})
    return list(unique.values())


def _resolver(
    source: ConfigSource, trees: dict[tuple[str, str | None], TemplateTree]
) -> Callable[[str, str | None, str], TemplateTree]:
    def resolve(service: str, tag: str | None, tree_id: str) -> TemplateTree:
        tree = trees.get((service, tag))
        if tree is None:
            # A work-tree template the replay did not read again belongs to a load that is
            # not used (only its memo is): opening it checks its content id.
            tree = trees[(service, tag)] = KeptTree(source, service, tag, tree_id)
        return tree

    return resolve


def _key(
    salt: str,
    source: ConfigSource,
    environments: Collection[str] | None,
    services: Collection[str] | None,
) -> str:
    parts = [
        f"v{FORMAT}",
        salt,
        # A trace replays only against the kind of source that recorded it: what a tagged
        # tree is (a Git tree, or the work tree for a tag about to be made) is the source's.
        f"{type(source).__module__}.{type(source).__qualname__}",
        str(source.root),
        "*" if environments is None else ",".join(sorted(environments)),
        "*" if services is None else ",".join(sorted(services)),
    ]
    return _digest("\n".join(parts).encode())[:32]


def load_config_kept(
    source: ConfigSource,
    store: LoadStore,
    problems: ProblemList | None = None,
    environments: Collection[str] | None = None,
    services: Collection[str] | None = None,
) -> Config:
    """`load_config`, using the load kept in `store` when its trace replays unchanged.

    Raises ConfigError like `load_config`; a config with errors is never kept.
    """
    problems = problems if problems is not None else ProblemList()
    key = _key(store.salt, source, environments, services)
    immutable_tags = bool(getattr(source, "tagged_trees_immutable", False))
    kept = store.get(key)
    memo = None
    if kept is not None:
        config, memo = _reuse(kept, source, immutable_tags, problems)
        if config is not None:
            return config
    # Something changed: load again, taking from the kept load what did not (see LoadMemo).
    tracing = TracingSource(source)
    first = len(problems.items)
    lend = LoadMemo()
    config = load_config(tracing, problems, environments, services, memo=memo, lend=lend)
    if tracing.traceable:
        data = _dump(tracing, config, problems.items[first:], lend)
        if data is not None:
            store.put(key, data)
    return config


def _tree_name(tracing: TracingSource, tree: TemplateTree) -> tuple[str, str | None, str] | None:
    if isinstance(tree, KeptTree):
        return tree._service, tree._tag, tree._tree_id
    return tracing.tree_name(tree)


def _dump(
    tracing: TracingSource, config: Config, warnings: list[Problem], memo: LoadMemo
) -> bytes | None:
    # Templates name their trees while pickled (trees read Git; the source gives them back).
    templates = _templates(config, memo)
    trees = [t.tree for t in templates]
    names = [_tree_name(tracing, t) for t in trees]
    if any(name is None for name in names):
        return None
    # Provenance is merged again on demand (Layered): not pickled, kept in this process.
    layered = [s.values for env in config.environments.values() for s in env.services.values()]
    layered += [s.values for _, s in memo.services.values()]
    provenance = [values._entries for values in layered]
    layers = [values._layers for values in layered]
    value_trees = [values._tree for values in layered]
    chunks: list[bytes | memoryview] = []
    try:
        for template, name in zip(templates, names, strict=True):
            template.tree = cast(TemplateTree, name)
        for values in layered:
            values._entries = None
            values._layers = cast(list[Layer], _LayersSlot.of(values._layers))
            values._tree = cast(dict[str, Any], _TreeSlot.of(values._tree))
        buffer = io.BytesIO()
        _SplitPickler(buffer, chunks).dump((config, warnings, memo))
        body = buffer.getvalue()
    except (pickle.PicklingError, TypeError, AttributeError):
        return None  # something in the config cannot be kept: load it every time
    finally:
        for template, tree in zip(templates, trees, strict=True):
            template.tree = tree
        for values, entries, kept, value_tree in zip(
            layered, provenance, layers, value_trees, strict=True
        ):
            values._entries = entries
            values._layers = kept
            values._tree = value_tree
    head = pickle.dumps(tracing.steps, protocol=5)
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + len(chunk))
    table = pickle.dumps(offsets, protocol=5)
    docs = b"".join(chunks)
    parts = [head, body, table]
    return b"".join(
        [*(p for part in parts for p in (len(part).to_bytes(8, "big"), part)), _crc(docs), docs]
    )


def _crc(data: bytes | memoryview) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def _reuse(
    data: bytes, source: ConfigSource, immutable_tags: bool, problems: ProblemList
) -> tuple[Config | None, LoadMemo | None]:
    """The kept config when its trace replays unchanged; else its memo, for the next load."""
    # Allocation-heavy: the cyclic GC would run hundreds of times for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        view = memoryview(data)
        head, view = _part(view)
        steps = pickle.loads(head)
        trees = _replay(steps, source, immutable_tags)
        if trees is None and not immutable_tags:
            return None, None  # a memo is only of use where tagged trees never change
        body, view = _part(view)
        table, view = _part(view)
        docs = view[4:]
        if bytes(view[:4]) != _crc(docs):
            return None, None
        offsets = pickle.loads(table)
        if not isinstance(offsets, list) or (offsets and offsets[-1] != len(docs)):
            return None, None
        config, warnings, memo = _SplitUnpickler(body, _KeptDocs(docs, offsets)).load()
        if not isinstance(config, Config) or not isinstance(memo, LoadMemo):
            return None, None
        resolve = _resolver(source, trees or {})
        for template in _templates(config, memo):
            template.tree = resolve(*cast(tuple[str, str | None, str], template.tree))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError):
        return None, None
    finally:
        if enabled:
            gc.enable()
    if trees is None:
        return None, memo
    problems.items.extend(warnings)
    return config, memo


def _part(view: memoryview) -> tuple[memoryview, memoryview]:
    """A length-prefixed part of a kept load, and what follows it."""
    size = int.from_bytes(view[:8], "big")
    if len(view) < 8 + size:
        raise EOFError("a kept load ends early")
    return view[8 : 8 + size], view[8 + size :]


class _KeptDocs:
    """The YAML documents of a kept load, each pickled apart and unpickled on first use.

    Their bytes were checked (CRC) before the load was used; a document of the load is
    the same in the next one (documents are never changed after parsing), so a load made
    from a kept one writes its unchanged documents' bytes back without unpickling them.
    """

    def __init__(self, data: memoryview, offsets: list[int]) -> None:
        self._data = data
        self._offsets = offsets

    def chunk(self, index: int) -> memoryview:
        return self._data[self._offsets[index] : self._offsets[index + 1]]


class _KeptDoc(YamlDoc):
    """A document of a kept load: its file name now, its data and lines on first use."""

    def __init__(self, docs: _KeptDocs, index: int, file: str) -> None:
        self.file = file
        self._docs = docs
        self._index = index

    def chunk(self) -> memoryview:
        return self._docs.chunk(self._index)

    def __getattr__(self, name: str) -> Any:  # only called for what is not set yet
        if name not in ("data", "lines"):
            raise AttributeError(name)
        data, lines = pickle.loads(self.chunk())
        self.data = data
        self.lines = lines
        return getattr(self, name)


#: A layer of a kept `Layered`: (name, document, its values), the values None where they
#: are the document's own `values` (as the loader layers them: read from it on first use).
_LayerSpec = tuple[str, YamlDoc, Any]


class _KeptLayers:
    """The value layers of one `Layered` of a kept load (see `Layered.layers`)."""

    __slots__ = ("spec",)

    def __init__(self, spec: list[_LayerSpec]) -> None:
        self.spec = spec

    def __call__(self) -> list[Layer]:
        return [
            (name, doc, doc.data.get("values") if values is None else values)
            for name, doc, values in self.spec
        ]


class _LayersSlot:
    """Stands for a `Layered`'s layers while its config is pickled: named by their
    documents, whose bytes are kept apart (see `_KeptDocs`)."""

    __slots__ = ("spec",)

    def __init__(self, spec: list[_LayerSpec]) -> None:
        self.spec = spec

    @classmethod
    def of(cls, layers: list[Layer] | Callable[[], list[Layer]]) -> _LayersSlot:
        if isinstance(layers, _LayersSlot):
            return layers  # a service both in the config and in its memo
        if isinstance(layers, _KeptLayers):
            return cls(layers.spec)  # not unpickled yet: named as they were
        if not isinstance(layers, list):
            layers = layers()
        return cls(
            [
                (name, doc, None if _doc_values(doc, values) else values)
                for name, doc, values in layers
            ]
        )


def _doc_values(doc: YamlDoc, values: Any) -> bool:
    """Whether `values` are `doc`'s own values (a kept document's are, when it was kept
    by the loader's layering: asked without unpickling it)."""
    if isinstance(doc, _KeptDoc) and "data" not in doc.__dict__:
        return False
    data = doc.data
    return isinstance(data, Mapping) and data.get("values") is values


class _KeptTree:
    """The value tree of one `Layered` of a kept load, pickled apart (see `Layered.tree`)."""

    __slots__ = ("_docs", "_index")

    def __init__(self, docs: _KeptDocs, index: int) -> None:
        self._docs = docs
        self._index = index

    def chunk(self) -> memoryview:
        return self._docs.chunk(self._index)

    def __call__(self) -> dict[str, Any]:
        tree: dict[str, Any] = pickle.loads(self.chunk())
        return tree


class _TreeSlot:
    """Stands for a `Layered`'s value tree while its config is pickled: pickled apart, as
    a document is (a kept tree not read since its load is written back as it was read)."""

    __slots__ = ("tree",)

    def __init__(self, tree: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self.tree = tree

    @classmethod
    def of(cls, tree: Any) -> _TreeSlot:
        return tree if isinstance(tree, _TreeSlot) else cls(tree)


def _kept_tree(index: int) -> dict[str, Any]:
    """What a pickled config names its value trees by (see `_kept_doc`)."""
    raise pickle.UnpicklingError("a kept load's value tree read without its load")


def _kept_doc(index: int, file: str) -> YamlDoc:
    """What a pickled config names its documents by; only `_SplitUnpickler` resolves it."""
    raise pickle.UnpicklingError("a kept load's document read without its load")


def _kept_layers(spec: list[_LayerSpec]) -> list[Layer]:
    """What a pickled config names its value layers by (see `_kept_doc`)."""
    raise pickle.UnpicklingError("a kept load's layers read without its load")


class _SplitPickler(pickle.Pickler):
    """Pickles a config with each document's data and lines apart, in `chunks`, named by
    its index there. Only documents and layers are reduced here, by their exact types
    (`dispatch_table`): the C pickler calls no Python for any other object."""

    def __init__(self, file: io.BytesIO, chunks: list[bytes | memoryview]) -> None:
        super().__init__(file, protocol=5)
        self._chunks = chunks
        self._index: dict[int, int] = {}
        table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
        table[YamlDoc] = table[_KeptDoc] = self._reduce_doc
        table[_LayersSlot] = _reduce_layers
        table[_TreeSlot] = self._reduce_tree
        self.dispatch_table = table

    def _reduce_doc(self, doc: YamlDoc) -> tuple[Any, ...]:
        index = self._index.get(id(doc))
        if index is None:
            index = self._index[id(doc)] = len(self._chunks)
            if isinstance(doc, _KeptDoc):
                self._chunks.append(doc.chunk())
            else:
                self._chunks.append(pickle.dumps((doc.data, doc.lines), protocol=5))
        return _kept_doc, (index, doc.file)

    def _reduce_tree(self, slot: _TreeSlot) -> tuple[Any, ...]:
        tree = slot.tree
        index = len(self._chunks)
        if isinstance(tree, _KeptTree):
            self._chunks.append(tree.chunk())
        else:
            if not isinstance(tree, dict):
                tree = tree()
            self._chunks.append(pickle.dumps(tree, protocol=5))
        return _kept_tree, (index,)


def _reduce_layers(slot: _LayersSlot) -> tuple[Any, ...]:
    return _kept_layers, (slot.spec,)


class _SplitUnpickler(pickle.Unpickler):
    """Unpickles a `_SplitPickler`'s config, its documents left to `docs`."""

    def __init__(self, body: memoryview, docs: _KeptDocs) -> None:
        super().__init__(io.BytesIO(body))
        self._docs = docs

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_kept_doc":
            return lambda index, file: _KeptDoc(self._docs, index, file)
        if module == __name__ and name == "_kept_layers":
            return _KeptLayers
        if module == __name__ and name == "_kept_tree":
            return lambda index: _KeptTree(self._docs, index)
        return super().find_class(module, name)
