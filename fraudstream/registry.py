"""The model registry: every model version kept with its manifest, and which one serves.

Layout under the registry root (setting ``model.registry_dir``, default
``<model.dir's parent>/registry``)::

    versions/<model_version>/   model.ubj + manifest.json (+ reports), never overwritten
    registry.json               {"champion", "shadow", "lineage", "history"}

``registry.json`` is replaced atomically (a temporary file, fsync, rename) under an
exclusive lock (``.lock``), so a reader sees the old or the new document, never a mix.
``champion`` is the version the worker and the API serve; ``shadow`` (optional) scores
beside it without acting; ``lineage`` is the stack of champions (a promotion pushes, a
rollback pops); ``history`` records every action with its UTC time.

The worker and the API follow the registry with :class:`ModelWatcher`: a cheap ``stat`` of
``registry.json`` at most every ``model.poll_interval_s``; when the champion or the shadow
changed, the new artifacts are loaded and verified (SHA-256, feature names) before anything
switches, and a bad artifact is refused (logged, counted) while the old model keeps scoring.
Without a registry (no ``registry.json``) they serve ``model.dir``, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from fraudstream.errors import FraudstreamError
from fraudstream.model import (
    MANIFEST_FILE,
    Manifest,
    ModelArtifact,
    ModelError,
    load_artifact,
    read_checked_json,
    read_manifest,
)

if TYPE_CHECKING:
    import numpy as np

    from fraudstream.config import Settings
    from fraudstream.metrics import DriftMetrics, ModelMetrics

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
VERSIONS_DIR = "versions"
LOCK_FILE = ".lock"


class RegistryError(FraudstreamError):
    """A registry action is impossible (unknown version, nothing to roll back to, ...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _empty() -> dict[str, Any]:
    return {"champion": None, "shadow": None, "lineage": [], "history": []}


class _HistoryEntry(BaseModel):
    """One action of ``history``; actions add their own keys (``previous``)."""

    model_config = ConfigDict(strict=True, extra="allow")

    at: str
    action: str
    version: str | None


class _RegistryDocument(BaseModel):
    """The shape of ``registry.json`` (:func:`_empty`), checked before anything reads it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    champion: str | None
    shadow: str | None
    lineage: list[str]
    history: list[_HistoryEntry]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


class ModelRegistry:
    """A directory of model versions and the document that says which one serves."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.file = self.root / REGISTRY_FILE

    # ------------------------------------------------------------ reading

    def exists(self) -> bool:
        return self.file.is_file()

    def state(self) -> dict[str, Any]:
        """The registry document (an empty one when there is no registry yet)."""
        if not self.file.is_file():
            return _empty()
        return read_checked_json(self.file, _RegistryDocument, RegistryError)[0]

    def champion(self) -> str | None:
        champion: str | None = self.state()["champion"]
        return champion

    def shadow(self) -> str | None:
        shadow: str | None = self.state()["shadow"]
        return shadow

    def history(self) -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = self.state()["history"]
        return history

    def path(self, version: str) -> Path:
        if not version or Path(version).name != version or version.startswith("."):
            raise RegistryError(f"{version!r} is not a model version")
        return self.root / VERSIONS_DIR / version

    def versions(self) -> list[str]:
        base = self.root / VERSIONS_DIR
        if not base.is_dir():
            return []
        return sorted(
            p.name for p in base.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()
        )

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version`` as written, once checked."""
        return self._manifest(version)[0]

    def _manifest(self, version: str) -> tuple[dict[str, Any], Manifest]:
        """``version``'s manifest as written and as checked (:class:`RegistryError` naming
        the file when it is not one)."""
        path = self.path(version) / MANIFEST_FILE
        if not path.is_file():
            raise RegistryError(
                f"unknown model version {version!r} (see `fraudstream models list`)"
            )
        try:
            return read_manifest(path)
        except ModelError as exc:
            raise RegistryError(str(exc)) from None

    def load(self, version: str) -> ModelArtifact:
        """The verified artifact of ``version`` (raises :class:`ModelError` when tampered)."""
        self.manifest(version)  # a clear error for an unknown version
        return load_artifact(self.path(version))

    def list(self) -> list[dict[str, Any]]:
        """One row per version: version, created_at, role, test metrics, registered_at."""
        state = self.state()
        registered = {h["version"]: h["at"] for h in state["history"] if h["action"] == "register"}
        rows = []
        for version in self.versions():
            manifest = self._manifest(version)[1]
            metrics = {} if manifest.metrics is None else manifest.metrics.test
            role = (
                "champion"
                if version == state["champion"]
                else "shadow"
                if version == state["shadow"]
                else ""
            )
            rows.append(
                {
                    "version": version,
                    "role": role,
                    "created_at": manifest.created_at,
                    "registered_at": registered.get(version),
                    "auc_roc": metrics.get("auc_roc"),
                    "average_precision": metrics.get("average_precision"),
                    "card_precision_at_100": metrics.get("card_precision_at_100"),
                }
            )
        return rows

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The document under an exclusive lock; written back atomically on success."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.state()
            yield state
            write_json_atomic(self.file, state)

    def register(self, artifact_dir: Path, *, champion_if_none: bool = True) -> str:
        """Copy a verified artifact into ``versions/<its version>``; its version.

        A version already registered is an error (versions are never overwritten). The first
        registered version becomes the champion when ``champion_if_none``.
        """
        artifact = load_artifact(Path(artifact_dir))  # verified before it is kept
        version = artifact.version
        target = self.path(version)
        with self._locked() as state:
            if target.exists():
                raise RegistryError(f"model version {version} is already registered")
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
            try:
                for item in Path(artifact_dir).iterdir():
                    if item.is_file():
                        shutil.copy2(item, staging / item.name)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            state["history"].append({"at": _now(), "action": "register", "version": version})
            if champion_if_none and state["champion"] is None:
                self._set_champion(state, version, "promote")
        log.info("registered model %s in %s", version, self.root)
        return version

    def promote(self, version: str) -> None:
        """Make ``version`` the champion (verified first); it stops being the shadow."""
        self.load(version)
        with self._locked() as state:
            if state["champion"] == version:
                raise RegistryError(f"{version} is already the champion")
            self._set_champion(state, version, "promote")
            if state["shadow"] == version:
                state["shadow"] = None
        log.info("promoted model %s", version)

    def rollback(self) -> str:
        """Make the previous champion (in the lineage) the champion again; its version.
        It stops being the shadow if it was one."""
        with self._locked() as state:
            lineage: list[str] = state["lineage"]
            if len(lineage) < 2:
                raise RegistryError("no previous champion to roll back to")
            previous = lineage[-2]
            self.load(previous)  # refuse a tampered one before switching
            current = lineage.pop()
            state["champion"] = previous
            if state["shadow"] == previous:  # never the champion's shadow (as in promote)
                state["shadow"] = None
            state["history"].append(
                {"at": _now(), "action": "rollback", "version": previous, "previous": current}
            )
        log.info("rolled back from %s to %s", current, previous)
        return previous

    def set_shadow(self, version: str | None) -> None:
        """Score ``version`` beside the champion without acting (None: no shadow)."""
        if version is not None:
            self.load(version)
        with self._locked() as state:
            if version is not None and version == state["champion"]:
                raise RegistryError(f"{version} is the champion; a shadow must be another model")
            previous = state["shadow"]
            state["shadow"] = version
            state["history"].append(
                {"at": _now(), "action": "shadow", "version": version, "previous": previous}
            )

    def register_trained(self, artifact_dir: Path, *, promote: bool = True) -> str:
        """Register a freshly trained artifact; make it the champion when ``promote`` (or
        when there is none). Its version."""
        version = self.register(artifact_dir, champion_if_none=True)
        if promote and self.champion() != version:
            self.promote(version)
        return version

    @staticmethod
    def _set_champion(state: dict[str, Any], version: str, action: str) -> None:
        previous = state["champion"]
        state["champion"] = version
        state["lineage"].append(version)
        state["history"].append(
            {"at": _now(), "action": action, "version": version, "previous": previous}
        )


# ---------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServingModels:
    """The models a scorer serves: the champion and an optional shadow."""

    champion: ModelArtifact
    shadow: ModelArtifact | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return self.champion.version, None if self.shadow is None else self.shadow.version


def load_serving(registry: ModelRegistry, fallback_dir: Path) -> ServingModels:
    """The registry's champion and shadow, or the artifact in ``fallback_dir`` without one."""
    state = registry.state() if registry.exists() else None
    if state is None or state["champion"] is None:
        return ServingModels(load_artifact(fallback_dir))
    shadow = None if state["shadow"] is None else registry.load(state["shadow"])
    return ServingModels(registry.load(state["champion"]), shadow)


class ModelWatcher:
    """Notices a promoted model (or a new shadow) and loads it, at most every ``interval_s``.

    :meth:`poll` costs one clock read until the interval has passed, then one ``stat`` of
    ``registry.json``; only when the file changed does it read the document, and only when
    the champion or shadow differ from ``current`` does it load and verify artifacts. A bad
    artifact is refused once per registry state (logged, ``on_failure`` called) and the
    caller keeps its models.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        current: ServingModels,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.current = current
        self.interval_s = interval_s
        self.clock = clock
        self.on_failure = on_failure
        self.next_check = clock() + interval_s
        self.stamp = self._stamp()
        self.reloads = 0
        self.failures = 0

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.registry.file.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def due(self) -> bool:
        return self.clock() >= self.next_check

    def poll(self) -> ServingModels | None:
        """New models to switch to, or None (nothing changed, not due, or refused)."""
        now = self.clock()
        if now < self.next_check:
            return None
        self.next_check = now + self.interval_s
        stamp = self._stamp()
        if stamp == self.stamp or stamp is None:
            return None
        self.stamp = stamp
        try:
            state = self.registry.state()
            wanted = (state["champion"], state["shadow"])
            if wanted[0] is None or wanted == self.current.key:
                return None
            champion = (
                self.current.champion
                if wanted[0] == self.current.champion.version
                else self.registry.load(wanted[0])
            )
            shadow = None if wanted[1] is None else self.registry.load(wanted[1])
        except (ModelError, RegistryError, OSError, KeyError) as exc:
            self.refused(f"{type(exc).__name__}: {exc}")
            return None
        return ServingModels(champion, shadow)

    def refused(self, reason: str) -> None:
        """Count and log a refused switch (the old models keep scoring)."""
        self.failures += 1
        log.error("model reload refused, keeping %s: %s", self.current.key, reason)
        if self.on_failure is not None:
            self.on_failure(reason)

    def switched(self, models: ServingModels) -> None:
        """Record that the caller now serves ``models``."""
        self.current = models
        self.reloads += 1
        log.info("now serving model %s (shadow %s)", *models.key)


class SwitchableScorer(Protocol):
    """What :class:`HotReload` needs of a scorer (:class:`~fraudstream.scoring.Scorer`)."""

    model: ModelArtifact
    shadow: ModelArtifact | None

    def use(self, model: ModelArtifact, shadow: ModelArtifact | None = None) -> None: ...


class HotReload:
    """Switches a scorer to the registry's champion and shadow when they change.

    Call :meth:`due` (a clock read) between batches and :meth:`check` when it is true, on
    the thread that scores (or while no batch is being scored): the new models are loaded,
    verified and checked against the store before the scorer switches, so a batch is scored
    wholly by one model and every decision names it.
    """

    def __init__(
        self,
        scorer: SwitchableScorer,
        watcher: ModelWatcher,
        metrics: _HasModelMetrics,
        on_switch: Callable[[ServingModels], None] | None = None,
    ) -> None:
        self.scorer = scorer
        self.watcher = watcher
        self.metrics = metrics
        self.on_switch = on_switch
        watcher.on_failure = self._failed
        self._publish()

    def due(self) -> bool:
        return self.watcher.due()

    def check(self) -> bool:
        """Switch if the registry changed; True when the scorer now serves other models."""
        models = self.watcher.poll()
        if models is None:
            return False
        try:
            self.scorer.use(models.champion, models.shadow)
        except ModelError as exc:
            self.watcher.refused(str(exc))
            return False
        self.watcher.switched(models)
        with self.metrics.lock:
            self.metrics.models.reloads.inc()
        self._publish()
        if self.on_switch is not None:
            self.on_switch(models)
        return True

    def _failed(self, _reason: str) -> None:
        with self.metrics.lock:
            self.metrics.models.reload_failures.inc()

    def _publish(self) -> None:
        shadow = self.scorer.shadow
        with self.metrics.lock:
            self.metrics.models.set_serving(
                self.scorer.model.version, None if shadow is None else shadow.version
            )


class _HasModelMetrics(Protocol):
    lock: threading.Lock
    models: ModelMetrics


class _HasDriftMetrics(_HasModelMetrics, Protocol):
    drift: DriftMetrics


class _Observable(SwitchableScorer, Protocol):
    observer: Callable[[np.ndarray, np.ndarray], None] | None


def watch_drift(settings: Settings, scorer: _Observable, metrics: _HasDriftMetrics) -> None:
    """Feed every scored batch to a drift monitor built from the champion's training
    baseline (none, with one log line, when its manifest has no baseline)."""
    from fraudstream.drift import drift_monitor

    monitoring = settings.monitoring
    monitor = drift_monitor(
        scorer.model.manifest,
        monitoring.drift_window,
        monitoring.drift_threshold,
        metrics=metrics.drift,
    )
    if monitor is None:
        scorer.observer = None
        return
    observe = monitor.observe

    def observer(matrix: np.ndarray, scores: np.ndarray) -> None:
        with metrics.lock:  # the gauges are read by the /metrics thread
            observe(matrix, scores)

    scorer.observer = observer


def hot_reload(settings: Settings, scorer: _Observable, metrics: _HasDriftMetrics) -> HotReload:
    """The :class:`HotReload` of a worker or API process, from the model settings; it also
    restarts drift monitoring against each new champion's baseline."""
    watch_drift(settings, scorer, metrics)
    current = ServingModels(scorer.model, scorer.shadow)
    registry = ModelRegistry(settings.model.registry_path)
    watcher = ModelWatcher(registry, current, settings.model.poll_interval_s)
    monitored = [current.champion.version]

    def on_switch(models: ServingModels) -> None:
        if models.champion.version != monitored[0]:  # a new shadow keeps the window
            monitored[0] = models.champion.version
            watch_drift(settings, scorer, metrics)

    return HotReload(scorer, watcher, metrics, on_switch=on_switch)
