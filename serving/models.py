"""Named models a server holds: retrievers and completion models, loaded from their directories (no pickle).

A directory is told apart by its manifest: ``xmr-retriever.json`` (:class:`xmr.Retriever`) or ``qac.json``
(:class:`xmr.qac.CompletionModel`). The registry maps names to loaded models and swaps an entry in one
assignment, so a call that already holds a model finishes on it while new calls see the replacement.
:class:`Watcher` reloads a model when its directory is saved again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmr.validation import InputError

LOGGER = logging.getLogger("xmr.serving")
RETRIEVAL = "retrieval"
COMPLETION = "completion"


class ModelLoadError(InputError):
    """A model directory that cannot be served; the message names the directory and the problem."""


@dataclass(frozen=True)
class LoadedModel:
    """One served model: its name, kind, the loaded object, a version string and where it came from."""

    name: str
    kind: str
    model: Any
    version: str
    path: str
    hits: Any = None  # serving.wire.HitTable of a local retriever's hits or a completion model's completions

    def __post_init__(self) -> None:
        if self.hits is None and not self.routed:
            from serving.wire import HitTable

            make = HitTable.of_labels if self.kind == RETRIEVAL else HitTable.of_completions
            object.__setattr__(self, "hits", make(self.model.labels))

    @property
    def nr_labels(self) -> int:
        """Number of labels (items or known queries) the model ranks."""
        return int(self.model.nr_labels)

    @property
    def routed(self) -> bool:
        """True for a split retriever answered through its shard servers (``serving.router``)."""
        return bool(getattr(self.model, "routed", False))


def load_model(name: str, path: str | Path) -> LoadedModel:
    """Load the model directory ``path`` under ``name``; ModelLoadError saying why it cannot be served."""
    from xmr.model_io import ModelFormatError
    from xmr.qac.model import MANIFEST as QAC_MANIFEST
    from xmr.qac.model import CompletionModel
    from xmr.retriever import Retriever, is_retriever_dir

    p = Path(path)
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ModelLoadError(f"model name {name!r}: use letters, digits, '-', '_' or '.'")
    if not p.is_dir():
        raise ModelLoadError(f"{p}: not a directory (expected a saved xmr retriever or completion model)")
    try:
        if is_retriever_dir(p):
            r = Retriever.load(p)
            return LoadedModel(name, RETRIEVAL, r, r.model_version, str(p))
        if (p / QAC_MANIFEST).is_file():
            m = CompletionModel.load(p)
            # a completion model has no version stamp of its own: its manifest's digest identifies the save
            digest = hashlib.sha1((p / QAC_MANIFEST).read_bytes()).hexdigest()[:12]
            return LoadedModel(name, COMPLETION, m, f"qac-{digest}", str(p))
    except (ModelFormatError, InputError, OSError) as e:
        raise ModelLoadError(f"{p}: cannot load model {name!r}: {e}") from None
    raise ModelLoadError(f"{p}: neither an xmr retriever (xmr-retriever.json) nor a completion model (qac.json)")


ROUTED_CLOSE_DELAY_S = 10.0


class ModelRegistry:
    """Thread-safe name -> LoadedModel map with atomic replacement."""

    def __init__(self, models: list[LoadedModel] | None = None) -> None:
        """Start with ``models`` (names must be distinct)."""
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        for m in models or []:
            if m.name in self._models:
                raise ModelLoadError(f"model name {m.name!r} given twice")
            self._models[m.name] = m

    def get(self, name: str) -> LoadedModel | None:
        """The model called ``name``, or None."""
        return self._models.get(name)

    def put(self, model: LoadedModel) -> LoadedModel | None:
        """Add or replace a model; returns the one it replaced."""
        with self._lock:
            old = self._models.get(model.name)
            models = dict(self._models)
            models[model.name] = model
            self._models = models  # one assignment: readers see the old map or the new one
            return old

    def all(self) -> list[LoadedModel]:
        """Every model, by name."""
        return [self._models[n] for n in sorted(self._models)]

    def reload(self, name: str) -> tuple[LoadedModel, LoadedModel]:
        """Load ``name`` again from its directory and swap it in; returns (new, old). KeyError for an unknown
        name; ModelLoadError (the old model keeps serving) when the directory does not load. A routed model
        loads its router directory again over the same shard servers, which must already hold the new split."""
        with self._reload_lock:  # one load at a time: each can hold a whole model in memory
            old = self._models[name]
            new = _reopen_routed(old) if old.routed else load_model(name, old.path)
            self.put(new)
            if old.routed:  # calls still in flight on the old router get a few seconds before its channels close
                threading.Timer(ROUTED_CLOSE_DELAY_S, old.model.close).start()
            return new, old


def _reopen_routed(old: LoadedModel) -> LoadedModel:
    from xmr.model_io import ModelFormatError

    try:
        routed = old.model.reopen(old.path)
    except (ModelFormatError, InputError, OSError) as e:
        raise ModelLoadError(f"{old.path}: cannot reload routed model {old.name!r}: {e}") from None
    return LoadedModel(old.name, old.kind, routed, routed.model_version, old.path)


def manifest_path(model: LoadedModel) -> Path:
    """The file whose replacement marks a new save of the model's directory."""
    from xmr.qac.model import MANIFEST as QAC_MANIFEST
    from xmr.retriever import MANIFEST_NAME

    return Path(model.path) / (MANIFEST_NAME if model.kind == RETRIEVAL else QAC_MANIFEST)


class Watcher:
    """Polls every model's manifest and reloads a model whose directory was saved again (atomic saves replace
    the directory, so the manifest's inode or mtime changes). A failed load is logged and retried only after the
    next change; the old model keeps serving."""

    def __init__(self, registry: ModelRegistry, interval_s: float = 2.0,
                 on_reload: Any = None) -> None:
        """Watch ``registry`` every ``interval_s`` seconds; ``on_reload(name, ok)`` is told of every attempt."""
        self.registry = registry
        self.interval_s = interval_s
        self.on_reload = on_reload or (lambda name, ok: None)
        self._seen = {m.name: self._stamp(m) for m in registry.all()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xmr-model-watcher", daemon=True)

    @staticmethod
    def _stamp(m: LoadedModel) -> tuple[int, int] | None:
        try:
            st = manifest_path(m).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def start(self) -> Watcher:
        """Start polling in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=10)

    def check(self) -> None:
        """One poll: reload each model whose manifest changed since the last look."""
        for m in self.registry.all():
            stamp = self._stamp(m)
            if stamp is None or stamp == self._seen.get(m.name):
                continue
            self._seen[m.name] = stamp
            try:
                new, old = self.registry.reload(m.name)
            except ModelLoadError as e:
                LOGGER.warning("reload of %s failed, the old version %s keeps serving: %s", m.name, m.version, e,
                               extra={"event": "reload_failed", "model": m.name, "version": m.version})
                self.on_reload(m.name, False)
                continue
            LOGGER.info("reloaded %s: version %s -> %s", m.name, old.version, new.version,
                        extra={"event": "reload", "model": m.name, "old_version": old.version, "version": new.version})
            self.on_reload(m.name, True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
