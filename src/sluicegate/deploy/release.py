"""The release procedure, one copy for the training flow and the CLI: validate first, then bless, then switch.

A release packages a version, stages it on its target (local: a model server on a free
port that must pass the canary; container: the same with the model's image run by podman on a
published loopback port), and only then moves the aliases (`champion`, as a
compare-and-set) and switches traffic. With `deploy.strategy: shadow|canary` (local target,
a champion serving) the candidate instead starts a rollout beside the champion and the
aliases wait for its end (`sluicegate.deploy.traffic`); releasing the rollout's candidate
again (`sluice promote PROJECT VERSION`) promotes it. Any failure before the switch leaves aliases and
traffic as they were; a failed switch moves the aliases back. Every outcome is emitted
(`model.deployed`, `deploy.failed`, `model.rolled_back`) through one `Emitter`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

from sluicegate.config import DeployConfig, PackagingConfig
from sluicegate.deploy.container import stage_container
from sluicegate.deploy.current import release_key, write_release_key
from sluicegate.deploy.local import serving_version, stage_local
from sluicegate.deploy.processes import project_lock, read_state, state_dir
from sluicegate.deploy.staged import DeployResult, Staged
from sluicegate.deploy.targets import stage_kubernetes
from sluicegate.errors import DeployError, PromotionConflictError, RegistryError, SluiceError
from sluicegate.events import (
    DEPLOY_FAILED,
    MODEL_DEPLOYED,
    MODEL_ROLLED_BACK,
    NO_EVENTS,
    Emitter,
    deploy_failed_payload,
    deployed_payload,
    rolled_back_payload,
)
from sluicegate.packaging import BentoResult
from sluicegate.settings import Settings
from sluicegate.tracking import CHAMPION, PREVIOUS

log = logging.getLogger(__name__)

FRONTED = ("local", "container")
Undo = Callable[[], None]
Bless = Callable[[], Undo]  # moves aliases; returns how to move them back


@dataclass(frozen=True)
class Promotion:
    """Bless the released version once it passed the canary: `champion` moves to it only if it
    still points at `expected_champion` (what the gates compared against)."""

    expected_champion: str | None


# ---------------------------------------------------------------- targets
def stage_bento(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings,
                out_dir: Path | None = None) -> Staged:
    """Check a Bento on the configured target without making it live (see `Staged`).

    Raises:
        DeployError: the candidate failed a check; nothing that serves was touched.
    """
    if spec.target == "local":
        return stage_local(bento, spec, packaging, settings)
    if spec.target == "container":
        return stage_container(bento, spec, packaging, settings)
    return stage_kubernetes(bento, spec, packaging, out_dir or state_dir(settings, bento.project) / "kubernetes",
                            settings)


def deploy_bento(bento: BentoResult, spec: DeployConfig, packaging: PackagingConfig, settings: Settings,
                 out_dir: Path | None = None) -> DeployResult:
    """Deploy to the configured target (`local`, `container` or `kubernetes`) without touching aliases.

    Raises:
        DeployError: the deploy failed; whatever was serving keeps serving.
    """
    return stage_bento(bento, spec, packaging, settings, out_dir).commit()


# ---------------------------------------------------------------- aliases
def _point(tracker: Any, project: str, alias: str, version: str | None) -> None:
    if version is None:
        tracker.delete_alias(project, alias)
    else:
        tracker.set_alias(project, alias, str(version))


def _alias_version(tracker: Any, project: str, alias: str) -> str | None:
    record = tracker.alias(project, alias)
    return record.version if record is not None else None


def restore_champion(tracker: Any, project: str, version: str | None) -> str | None:
    """Point `champion` back at `version` after a failed deploy; returns the version it left.

    `previous-champion` then names the version `version` had replaced (its
    `sluice.promoted_from` tag) or is removed, so it never names the restored champion itself.
    """
    current = tracker.champion(project)
    if version is None or (current is not None and current.version == str(version)):
        return None
    tracker.set_alias(project, CHAMPION, str(version))
    before = tracker.version(project, str(version)).tags.get("sluice.promoted_from")
    usable = before not in (None, "", "None", str(version)) and (current is None or before != current.version)
    _point(tracker, project, PREVIOUS, before if usable else None)
    return current.version if current is not None else None


def _promote(tracker: Any, project: str, version: str, promotion: Promotion) -> Bless:
    def bless() -> Undo:
        previous = _alias_version(tracker, project, PREVIOUS)
        tracker.promote(project, version, promotion.expected_champion)  # compare-and-set

        def undo() -> None:
            _point(tracker, project, CHAMPION, promotion.expected_champion)
            _point(tracker, project, PREVIOUS, previous)
        return undo
    return bless


def _swap_back(tracker: Any, project: str, back_to: str, back_from: str | None) -> Bless:
    def bless() -> Undo:
        now = _alias_version(tracker, project, CHAMPION)
        if now != back_from:
            raise PromotionConflictError(f"{project}: champion moved from v{back_from} to v{now} during the "
                                         f"rollback; nothing was changed (re-run `sluice rollback`)")
        tracker.set_alias(project, CHAMPION, back_to)
        _point(tracker, project, PREVIOUS, back_from)

        def undo() -> None:
            _point(tracker, project, CHAMPION, back_from)
            tracker.set_alias(project, PREVIOUS, back_to)
        return undo
    return bless


# ---------------------------------------------------------------- the release
def release_version(tracker: Any, project: str, version: str | None, packaging: PackagingConfig,
                    spec: DeployConfig, task: str, settings: Settings, out_dir: Path | None = None, *,
                    promotion: Promotion | None = None, events: Emitter = NO_EVENTS) -> DeployResult:
    """Package a version (default: the champion), stage it, bless it when asked, then make it live.

    Order: package, start on a free port and replay the canary rows (local target), then
    move `champion` (only with `promotion`, as a compare-and-set), then switch traffic.

    Args:
        version: the version to release; default the current champion.
        promotion: move `champion` to `version` after the canary (the training flow's case).
            Without it the aliases are not moved, except that a champion which fails its
            deploy while another version serves is pointed back at the serving version.
        events: where `model.deployed` / `deploy.failed` / `model.rolled_back` go.

    Returns:
        The target's `DeployResult`.

    Raises:
        RegistryError: no such version, or no champion (nothing was started).
        PromotionConflictError: the champion moved since the gates compared; nothing changed.
        DeployError: any other failure, whatever its cause (canary, corrupted artifact, an
            unpickling error, a missing file): aliases and traffic are as they were.
    """
    record = tracker.version(project, version) if version else tracker.champion(project)
    if record is None:
        raise RegistryError(f"{project}: no champion to package; train one with `sluice run` first")
    bless = _promote(tracker, project, record.version, promotion) if promotion is not None else None
    return _release(tracker, project, record.version, packaging, spec, task, settings, out_dir, bless, events)


def rollback_release(tracker: Any, project: str, packaging: PackagingConfig, spec: DeployConfig, task: str,
                     settings: Settings, out_dir: Path | None = None, *,
                     events: Emitter = NO_EVENTS) -> tuple[str, str | None, DeployResult]:
    """Make `previous-champion` the champion again and deploy it, canary first; swap the two aliases.

    Returns:
        (version rolled back to, version rolled back from, the deploy result).

    Raises:
        RegistryError: there is no previous champion.
        PromotionConflictError: the champion moved during the rollback; nothing changed.
        DeployError: the redeploy failed; `champion` and `previous-champion` are as they were.
    """
    previous, current = tracker.alias(project, PREVIOUS), tracker.champion(project)
    if previous is None or (current is not None and previous.version == current.version):
        raise RegistryError(f"{project}: no previous champion to roll back to")
    back_from = current.version if current is not None else None
    spec = spec.model_copy(update={"strategy": "direct"})  # a rollback switches at once, never a rollout
    result = _release(tracker, project, previous.version, packaging, spec, task, settings, out_dir,
                      _swap_back(tracker, project, previous.version, back_from), events)
    events.emit(project, MODEL_ROLLED_BACK, rolled_back_payload(project, previous.version, back_from, "rollback"))
    return previous.version, back_from, result


def _release(tracker: Any, project: str, version: str, packaging: PackagingConfig, spec: DeployConfig, task: str,
             settings: Settings, out_dir: Path | None, bless: Bless | None, events: Emitter) -> DeployResult:
    with project_lock(settings, project):  # one release of a project at a time, across processes
        return _release_locked(tracker, project, version, packaging, spec, task, settings, out_dir, bless, events)


def _release_locked(tracker: Any, project: str, version: str, packaging: PackagingConfig, spec: DeployConfig,
                    task: str, settings: Settings, out_dir: Path | None, bless: Bless | None,
                    events: Emitter) -> DeployResult:
    from sluicegate.deploy import traffic
    from sluicegate.packaging import package_model

    behind_front = spec.target in FRONTED  # the targets whose port a front process owns
    serving = serving_version(settings, project) if behind_front else None
    rollout = traffic.active_rollout(read_state(settings, project)) if behind_front else None
    if rollout is not None:
        if str(rollout["candidate_version"]) == str(version) and bless is not None:  # promote the rollout
            return traffic.promote_rollout(tracker, settings, project, packaging, bless, events,
                                           f"promoted during its {rollout['strategy']}")
        raise DeployError(f"{project}: a {rollout['strategy']} rollout of v{rollout['candidate_version']} beside "
                          f"v{rollout['champion_version']} is under way; finish it first with `sluice rollout "
                          f"promote {project}` or `sluice rollout abort {project}`")
    fail = _Failure(tracker, project, version, serving, events)
    try:
        bento = package_model(tracker, project, version, packaging, spec, task, settings)
        staged = stage_bento(bento, spec, packaging, settings, out_dir)
    except BaseException as exc:
        fail.reraise(exc, restore=bless is None)
    if spec.strategy != "direct" and staged.candidate is not None and serving is not None and serving != version:
        try:  # the aliases wait for the rollout's end
            # the promotion at its end is a compare-and-set against the champion of now
            expected = _alias_version(tracker, project, CHAMPION)
            return traffic.begin_rollout(staged.candidate, spec, settings, expected, events)
        except BaseException as exc:
            staged.abort()
            fail.reraise(exc)
    try:
        undo = bless() if bless is not None else None
    except BaseException as exc:
        staged.abort()
        fail.reraise(exc)
    try:
        result = staged.commit()  # on failure the old backend serves again and the candidate is stopped
    except BaseException as exc:
        note = ""
        if undo is not None:
            try:
                undo()
                note = "; aliases moved back"
                back = _alias_version(tracker, project, CHAMPION)
                if back is not None and back != version:
                    events.emit(project, MODEL_ROLLED_BACK, rolled_back_payload(project, back, version, "deploy failed"))
            except Exception as undo_exc:
                note = f"; moving the aliases back FAILED ({type(undo_exc).__name__}: {undo_exc}), check them"
        fail.reraise(exc, note=note)
    if result.target == "local":  # a repeated deploy of exactly this is then a no-op found without packaging
        write_release_key(settings, project, release_key(project, version, packaging, spec, task))
    events.emit(project, MODEL_DEPLOYED,
                deployed_payload(project, version, result.target, result.url, result.was, result.message))
    log.info("%s: released v%s (%s)", project, version, result.message)
    return result


@dataclass(frozen=True)
class _Failure:
    """Turns any exception of a release into the error to raise, after emitting `deploy.failed`."""

    tracker: Any
    project: str
    version: str
    serving: str | None
    events: Emitter

    def reraise(self, exc: BaseException, restore: bool = False, note: str = "") -> NoReturn:
        """Raise the error for `exc` (called inside its `except` block)."""
        err = self._error(exc, restore, note)
        if err is exc:
            raise  # noqa: PLE0704 - only ever called inside the `except` block that caught `exc`
        raise err from exc

    def _error(self, exc: BaseException, restore: bool, note: str) -> BaseException:
        if restore:
            note += self._restore()
        detail = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        self.events.emit(self.project, DEPLOY_FAILED,
                         deploy_failed_payload(self.project, self.version, self.serving, detail + note))
        if isinstance(exc, (DeployError, PromotionConflictError)):
            return type(exc)(f"{exc}{note}") if note else exc
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: cleaned up, passed on
            return exc
        return DeployError(f"{self.project} v{self.version}: deploy failed: {detail}{note}")

    def _restore(self) -> str:
        """A champion that just failed its deploy while another version serves goes back to that version."""
        try:
            if self.serving is None or self.serving == self.version \
                    or _alias_version(self.tracker, self.project, CHAMPION) != self.version:
                return ""
            left = restore_champion(self.tracker, self.project, self.serving)
        except Exception as exc:
            return f"; champion NOT moved back to v{self.serving} ({type(exc).__name__}: {exc})"
        if left is None:
            return ""
        self.events.emit(self.project, MODEL_ROLLED_BACK,
                         rolled_back_payload(self.project, self.serving, left, "deploy failed"))
        return f"; champion moved back to v{self.serving} (from v{left})"
