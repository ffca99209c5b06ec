"""Human approval on a real Prefect server with real training flows: approve through the API the UI form uses,
reject from the CLI, time out; the pending notification reaches a loopback webhook and a real notification block;
`sluice promote` and `sluice history` read the audit trail back from MLflow.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time

import pytest

from sluicegate import audit
from sluicegate.cli import main
from sluicegate.errors import ApprovalError, RegistryError
from sluicegate.settings import load_settings
from sluicegate.tracking import Tracker
from tests.helpers import churn_config, churn_frame, env_var, loopback_webhook, write_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
WEAK = ["features.drop=[tenure,support_calls]", "features.numeric.columns=[monthly_charges]"]
BLOCK = "sluice-approvals"  # saved on the server; the config names it bare, without its type slug


@pytest.fixture(scope="module")
def receiver():
    with loopback_webhook() as hook:
        yield hook.url, hook.posts


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness, receiver):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    base, _ = receiver
    CustomWebhookNotificationBlock(name="sluice", url=f"{base}/block",
                                   json_data={"subject": "{{subject}}", "text": "{{body}}"}).save(BLOCK, overwrite=True)
    root = tmp_path_factory.mktemp("approval")
    with env_var("SLUICE_HOME", str(root / ".sluice")):
        cfg = churn_config(root)
        cfg["gates"].update({"approval": "always", "approval_timeout_minutes": 5})
        cfg["notifications"] = {"webhook_url": f"{base}/hook", "prefect_block": BLOCK,
                                "events": ["approval_pending", "rejected", "promoted"]}
        path = write_project(root, churn_frame(1200, seed=5), cfg)
        yield path


class _Run:
    """A training flow run in a thread (it blocks while paused), with the harness's Prefect settings."""

    def __init__(self, path, overrides, reason="test"):
        from flows.training import training_pipeline

        self.result, self.error = None, None
        ctx = contextvars.copy_context()

        def target():
            try:
                self.result = ctx.run(training_pipeline, str(path), overrides, reason)
            except BaseException as exc:  # reported by the test
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def outcome(self, timeout=400):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the training run did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def _wait_paused(project: str, run: _Run, timeout: float = 400):
    from tasks.approve import _paused_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _paused_runs(project)
        if found:
            return found[0]
        if not run.thread.is_alive():
            run.outcome()
            raise AssertionError("the run finished without pausing for approval")
        time.sleep(1)
    raise AssertionError("no run paused for approval")


def _tracker() -> Tracker:
    return Tracker(load_settings())


def test_approved_through_the_api_the_ui_form_uses(project, receiver):
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input

    run = _Run(project, WEAK)
    run_id, version, flow_run = _wait_paused("churn", run)
    assert version == "1" and "sluice-approval" in flow_run.tags
    schema = read_flow_run_input(flow_run.state.state_details.run_input_keyset["schema"], flow_run_id=run_id)
    assert {"approve", "comment", "approver"} <= set(schema["properties"])  # the typed form the UI renders
    assert _tracker().champion("churn") is None  # nothing moves while it waits

    resume_flow_run(run_id, run_input={"approve": True, "comment": "first model, checked by hand", "approver": "alice"})
    result = run.outcome()
    assert result.outcome == "promoted" and result.champion == 1 and "approved by alice" in result.summary
    tags = _tracker().version("churn", "1").tags
    assert tags["sluice.approval"] == "approved" and tags["sluice.approved_by"] == "alice"
    assert tags["sluice.approval_comment"] == "first model, checked by hand"

    history = audit.read_history(_tracker(), "churn")
    assert [r.action for r in history] == [audit.PROMOTE, audit.APPROVE, audit.APPROVAL_REQUESTED]
    assert history[1].who == "alice" and history[1].why == "first model, checked by hand"
    assert history[1].flow_run_id == run_id and history[1].mlflow_run_id == _tracker().version("churn", "1").run_id
    assert history[0].details["approved_by"] == "alice"

    # the pending approval reached the webhook and, by its bare name, the Prefect notification block
    _, received = receiver
    hooks = [body for where, body in received if where == "/hook" and body["event"] == "sluicegate.approval.pending"]
    assert len(hooks) == 1 and hooks[0]["payload"]["flow_run_id"] == run_id
    assert "sluice approve churn" in hooks[0]["text"]
    blocks = [body for where, body in received if where == "/block"]
    assert blocks and blocks[0]["subject"] == "sluicegate.approval.pending" and "sluice approve churn" in blocks[0]["text"]


def test_rejected_from_the_cli_keeps_the_champion(project, receiver):
    run = _Run(project, None)  # all features: beats the weak champion on the gates
    _, version, _ = _wait_paused("churn", run)
    assert main(["reject", str(project), "--comment", "slice plan=pro looks off", "--by", "bob"]) == 0
    result = run.outcome()
    assert result.outcome == "rejected" and result.champion == 1 and "rejected by bob" in result.summary
    tr = _tracker()
    assert tr.champion("churn").version == "1"
    tags = tr.version("churn", version).tags
    assert tags["sluice.approval"] == "rejected" and tags["sluice.verdict"] == "rejected"
    newest = audit.read_history(tr, "churn", limit=2)
    assert [r.action for r in newest] == [audit.REJECT, audit.APPROVAL_REQUESTED]  # one rejection, by bob
    assert newest[0].who == "bob" and newest[0].why == "slice plan=pro looks off"
    _, received = receiver
    assert any(where == "/hook" and body["event"] == "sluicegate.model.rejected" and "rejected by bob" in body["text"]
               for where, body in received)
    # nothing waits any more: answering again is a clear error
    assert main(["approve", str(project)]) == ApprovalError.exit_code


def test_no_answer_within_the_timeout_rejects(project):
    run = _Run(project, ["gates.approval_timeout_minutes=0.1"])
    _wait_paused("churn", run)
    result = run.outcome()
    assert result.outcome == "rejected" and "no approval within 0.1 minutes" in result.summary
    tr = _tracker()
    assert tr.champion("churn").version == "1"
    newest = audit.read_history(tr, "churn", limit=1)[0]
    assert newest.action == audit.REJECT and newest.who == "sluicegate (approval timeout)"
    assert newest.details["verdict"] == "timed_out"


def test_approval_refused_without_a_persistent_prefect_api(project):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from sluicegate.gates import approval_required
    from tasks.approve import require_persistent_api

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(ApprovalError, match="no persistent Prefect API"):
            require_persistent_api("churn", approval_required("always", None))
        require_persistent_api("churn", approval_required("on_retrain", "manual"))  # nobody would be asked
        # the CLI refuses before Prefect's temporary API starts, and cannot answer without an API either
        assert main(["run", str(project)]) == ApprovalError.exit_code
        assert main(["approve", str(project)]) == ApprovalError.exit_code


def test_promote_by_hand_and_read_the_history(project, capsys):
    tr = _tracker()
    rejected = max(int(r.version) for r in tr.versions("churn"))
    assert main(["promote", str(project), "99", "--reason", "nope"]) == RegistryError.exit_code
    assert main(["promote", str(project), str(rejected), "--reason", "reviewed offline, ticket 42",
                 "--by", "carol"]) == 0
    assert tr.champion("churn").version == str(rejected)
    assert tr.alias("churn", "previous-champion").version == "1"
    assert tr.version("churn", str(rejected)).tags["sluice.promoted_by"] == "carol"
    capsys.readouterr()
    assert main(["history", str(project), "--json", "--limit", "3"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3 and records[0]["action"] == audit.MANUAL_PROMOTE
    assert records[0]["who"] == "carol" and records[0]["why"] == "reviewed offline, ticket 42"
    assert records[0]["details"]["champion_before"] == "1"
    assert main(["history", str(project)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "manual_promote" in lines[0] and "by carol" in lines[0] and len(lines) >= 8


def test_a_block_name_nobody_saved_is_named_in_the_error(project):
    from sluicegate.errors import SluiceError
    from tasks.events import notification_block_slug

    assert notification_block_slug(BLOCK) == f"custom-webhook/{BLOCK}"
    assert notification_block_slug("slack-webhook/ops") == "slack-webhook/ops"  # a full slug is used as given
    with pytest.raises(SluiceError, match="no Prefect notification block is named 'nope'"):
        notification_block_slug("nope")


def test_promote_by_hand_goes_through_the_release_path(project, capsys):
    """deploy.enabled: `sluice promote` packages, canaries and deploys before `champion` moves."""
    import httpx
    import yaml

    from sluicegate.deploy import free_port, stop_local

    cfg = yaml.safe_load(project.read_text())
    port = free_port()
    cfg.update({"project": "churn_live", "notifications": {}})
    cfg["gates"] = {k: v for k, v in cfg["gates"].items() if not k.startswith("approval")}
    cfg["deploy"] = {"enabled": True, "port": port, "readiness_timeout_s": 180}
    cfg["packaging"] = {"max_latency_ms": 2000}
    live = project.parent / "churn_live.yaml"
    live.write_text(yaml.safe_dump(cfg, sort_keys=False))
    from flows.training import training_pipeline

    try:
        assert training_pipeline(str(live), None, "test").outcome == "promoted"  # v1 serves
        assert training_pipeline(str(live), WEAK, "test").outcome == "rejected"  # v2 is worse: not released
        url = f"http://127.0.0.1:{port}"
        assert str(httpx.get(f"{url}/metadata", timeout=10).json()["version"]) == "1"
        assert main(["promote", str(live), "2", "--reason", "the weak model is the one we want", "--by", "dan"]) == 0
        tr = _tracker()
        assert tr.champion("churn_live").version == "2"
        assert str(httpx.get(f"{url}/metadata", timeout=10).json()["version"]) == "2"
        newest = audit.read_history(tr, "churn_live", limit=2)
        assert [r.action for r in newest] == [audit.MANUAL_PROMOTE, audit.DEPLOY]
        assert all(r.who == "dan" for r in newest) and newest[0].details["deployed"] is True
    finally:
        stop_local(load_settings(), "churn_live")
