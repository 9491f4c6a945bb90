"""Fault-injection proof: 1,000 uploads through the real runner code, on a virtual clock, then a
redrive of everything that failed, as `jobctl redrive` does it.

What is real: the runner's code (`dispatch.route`: event parsing, job records, slots, the
scheduler, task-stop events, the sweep, reports) with the settings `load_settings` reads from
the Lambda's environment, and the redrive's `jobctl.redrive.plan` and `restart`. What is
modelled (tests/fakes/simulated_pipeline.py over aws_model.py): ECS with its launch bucket
(burst 100, 20/s), an account limit and clientToken idempotency, its task-stop events through
EventBridge, the sweep's schedule, DynamoDB with its indexes, SQS, Lambda invoked by S3 (two
retries, then the dead-letter queue), botocore's retries. Time is simulated: the run takes
seconds, and the same seed gives the same figures on any machine, idle or busy.

Faults, for FAULT_RATE of the uploads, one kind each, drawn from FAULT_SEED:
  throttling   1-8 ThrottlingException answers (4 outlast one call's botocore retries),
  capacity     1-3 RunTask answers with a capacity `failures` entry,
  lost answer  1 or 4 answers lost after the task started (4 outlast botocore's retries: the
               sweep must find the task again by its clientToken),
  rejected     ECS rejects the request: the job fails without running and the runner reports
               it once to the dead-letter queue; the redrive must make that same record wait
               again and start it once, however often the message is replayed.
On top of these, 10 % of the uploads are delivered twice, at once or up to 30 s apart, and all
1,000 arrive within 20 s against an account limit of 200 tasks in flight: jobs wait for a slot.
(The launch bucket is not reached: claims on the one slots item start about 20 jobs a second,
its refill rate; the injected throttling stands for it.)
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from dispatch import route

from jobctl.redrive import Replay, Restart, plan, restart
from jobctl.runner import SWEEP_EVENT
from tests.fakes.simulated_pipeline import Outcome, Scenario, run_scenario, settle, tally

UPLOADS = int(os.environ.get("FAULT_UPLOADS", "1000"))
FAULT_RATE = float(os.environ.get("FAULT_RATE", "0.30"))
SEED = int(os.environ.get("FAULT_SEED", "20261128"))
REJECTED_SHARE = 0.1  # of the faulty uploads

SCENARIO = Scenario(
    uploads=UPLOADS,
    seed=SEED,
    arrival_window=20.0,
    duration=(30.0, 300.0),
    account_limit=200,
    transient_fault_rate=FAULT_RATE * (1 - REJECTED_SHARE),
    rejected_rate=FAULT_RATE * REJECTED_SHARE,
    duplicate_rate=0.10,
    duplicate_lag=(0.0, 30.0),
)


@dataclass
class SimulatedRunner:
    """The runner as `jobctl redrive` loads it, on the model's clients and clock."""

    outcome: Outcome

    def __call__(self, event: Any, context: Any = None) -> Any:
        return route(event, self.outcome.settings[-1], self.outcome.services)

    @property
    def store(self) -> Any:
        return self.outcome.services.job_store(self.outcome.settings[-1])

    @property
    def services(self) -> Any:
        return self.outcome.services

    def sweep(self) -> Any:
        return self(dict(SWEEP_EVENT))


def as_sqs_message(message_id: str, body: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter queue message as the redrive receives it."""
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"receipt-{message_id}",
        "Body": body,
        "MessageAttributes": attributes,
    }


def redrive(outcome: Outcome, replays: list[Replay]) -> list[Restart]:
    """What `jobctl redrive` does with the messages, in a process of the simulation (the model's
    clients wait on its clock): each replayed through the runner, then one sweep."""
    done: list[Restart] = []
    runner = SimulatedRunner(outcome)

    def work() -> None:
        for replay in replays:
            try:
                done.append(restart(replay, runner))
            except Exception as error:  # counted, as the redrive reports it
                outcome.replay_failures.append(str(error))
        runner.sweep()

    outcome.sim.spawn(work, name="redrive")
    settle(outcome, after=outcome.sim.now)
    return done


def test_every_upload_ends_as_one_task_or_one_report_and_a_redrive_leaves_one_task_each() -> None:
    outcome = run_scenario(SCENARIO)
    before = tally(outcome)
    stats = outcome.lambdas.stats
    messages = list(outcome.dead_letter.messages.values())
    rejected = [
        u.identity for u in outcome.uploads if u.faults[:1] and u.faults[0].kind == "rejected"
    ]
    jobs_before = outcome.jobs()

    # The redrive: every dead letter planned as `jobctl redrive` plans it, replayed twice over
    # (a copy of each message sent again) to show a replay redrives once.
    outcome.dead_letter.messages.clear()
    replays = [
        plan("dead-letter", as_sqs_message(m.message_id, m.body, m.attributes)) for m in messages
    ]
    first = redrive(outcome, replays)
    again = redrive(outcome, replays)
    after = tally(outcome)
    jobs_after = outcome.jobs()

    faults = Counter(fault.kind for u in outcome.uploads for fault in u.faults[:1])
    print(
        f"\nfault injection: seed {SEED}, fault rate {FAULT_RATE:.0%}, virtual clock\n"
        f"  uploads            {len(outcome.uploads)} "
        f"({sum(len(u.deliveries) for u in outcome.uploads)} S3 deliveries)\n"
        f"  faulty uploads     {dict(faults)}\n"
        f"  invocations        {dict(stats.invocations)} ({stats.async_retries} Lambda retries, "
        f"{stats.timeouts} function timeouts)\n"
        f"  RunTask calls      {outcome.ecs.calls['RunTask']}; faults given "
        f"{dict(outcome.ecs.faults_given)}; launch bucket refused {outcome.ecs.bucket.refused}; "
        f"account limit answered {outcome.ecs.calls['RunTask:limit']}\n"
        f"  started tasks      {before.tasks}\n"
        f"  dead-lettered      {len(messages)} reports, {len(+before.dead_lettered)} uploads\n"
        f"  lost / duplicated  {len(before.lost)} / {len(before.duplicated)}\n"
        f"  redriven           {len(messages)} messages, each twice "
        f"({len(outcome.replay_failures)} failed); uploads with one successful task after: "
        f"{after.with_one_success} of {len(outcome.uploads)}\n"
        f"  simulated          {outcome.settled_at / 60:.0f} min, {outcome.sim.events} events"
    )

    assert not before.unknown, f"tasks for uploads never made (key decoding?): {before.unknown[:5]}"
    assert not before.lost, f"{len(before.lost)} uploads got neither a task nor a report"
    assert not before.duplicated, (
        f"{len(before.duplicated)} uploads got more than one task or report: "
        f"{before.duplicated[:5]}"
    )
    assert not before.overlapping
    assert before.expired == 0, "SQS dropped messages at the end of their retention"
    # A rejected upload failed without running and was reported once, by the runner, as the S3
    # event that replays it, naming its job and why. (One whose rejection met a conflicting
    # write of its record was asked again by the sweep with the same token, and the model's
    # ECS, which rejects once, started it: one successful task, no report; counted above.)
    assert set(before.dead_lettered) <= set(rejected)
    assert set(before.dead_lettered.values()) == {1}
    failed_ids = {job.job_id for job in jobs_before.values() if job.state == "failed"}
    for message, replay in zip(messages, replays, strict=True):
        body = json.loads(message.body)
        assert "requestPayload" not in body, "an invocation failed: the runner should not raise"
        assert "InvalidParameterException" in message.attributes["reason"]["StringValue"]
        assert replay.job is not None
        assert replay.job.job_id in failed_ids
    if FAULT_RATE > 0:
        # Without these the proof would prove nothing about the paths it claims to cover.
        assert set(outcome.ecs.faults_given) == {
            "throttling",
            "capacity",
            "lost-answer",
            "rejected",
        }
        assert messages, "no upload was dead-lettered: the redrive went untested"
    assert outcome.ecs.calls["RunTask:limit"] > 0, "no job had to wait for the account limit"

    # The redrive: every rejected job waits again on its own record and runs once; the second
    # replay of each message finds it under way or done and starts nothing.
    assert not outcome.replay_failures, f"the redrive failed for: {outcome.replay_failures[:5]}"
    assert all(done.done and done.needs_sweep for done in first)
    assert not any(done.needs_sweep for done in again)
    for identity in before.dead_lettered:
        job = jobs_after[identity]
        assert job.job_id == jobs_before[identity].job_id
        assert (job.state, job.redrives) == ("succeeded", 1), identity
    assert not after.unknown
    assert after.with_one_success == len(outcome.uploads), (
        f"after the redrive, {len(outcome.uploads) - after.with_one_success} uploads have not "
        f"exactly one successful task: {after.duplicated[:5]}"
    )
