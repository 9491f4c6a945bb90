"""Fault-injection proof: 1,000 uploads through the real runner code, on a virtual clock.

What is real: the runner's code (`dispatch.process_event`: event parsing, tokens, parking,
delays) with the settings `load_settings` reads from the Lambda's environment, and the redrive's
`jobctl.redrive.plan`. What is modelled (tests/fakes/aws_model.py): ECS with its launch bucket
(burst 100, 20/s), an account limit and clientToken idempotency; SQS; Lambda invoked by S3
(two retries, then the dead-letter queue) and by the backlog's event source mapping; botocore's
retries. Time is simulated: the run takes seconds, and the same seed gives the same figures on
any machine, idle or busy.

Faults, for FAULT_RATE of the uploads, one kind each, drawn from FAULT_SEED:
  throttling   1-8 ThrottlingException answers (4 outlast one invocation's botocore retries),
  capacity     1-3 RunTask answers with a capacity `failures` entry,
  lost answer  1 or 4 answers lost after the task started (4 outlast botocore's retries: the
               upload waits in the backlog, and its retry must find the task by clientToken),
  rejected     ECS rejects the request on each of the direct path's three tries: the upload
               must end as exactly one dead letter, and the redrive must start it once.
On top of these, 10 % of the uploads are delivered twice, at once or up to 30 s apart, and all
1,000 arrive within 20 s against a limit of 200 tasks in flight: the launch bucket throttles and
uploads wait in the backlog.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any
from urllib.parse import unquote_plus

from jobctl.redrive import plan
from tests.fakes.simulated_pipeline import Scenario, replay, run_scenario, settle, tally

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


def as_sqs_message(message_id: str, body: str, attributes: dict[str, Any]) -> dict[str, Any]:
    """A dead-letter queue message as the redrive receives it."""
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"receipt-{message_id}",
        "Body": body,
        "MessageAttributes": attributes,
    }


def test_every_upload_ends_as_one_task_or_one_dead_letter_and_a_redrive_leaves_one_task_each() -> (
    None
):
    outcome = run_scenario(SCENARIO)
    before = tally(outcome)
    stats = outcome.lambdas.stats
    records = [json.loads(m.body) for m in outcome.dead_letter.messages.values()]

    # The redrive: every dead letter planned as `jobctl redrive` plans it, and replayed.
    messages = list(outcome.dead_letter.messages.values())
    outcome.dead_letter.messages.clear()
    for message in messages:
        replayed = plan(
            "dead-letter", as_sqs_message(message.message_id, message.body, message.attributes)
        )
        replay(outcome, replayed.event)
    settle(outcome, after=outcome.sim.now)
    after = tally(outcome)

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
        f"  parked             {outcome.backlog.sent} uploads\n"
        f"  started tasks      {before.tasks}\n"
        f"  dead-lettered      {len(records)} records, {len(+before.dead_lettered)} uploads\n"
        f"  lost / duplicated  {len(before.lost)} / {len(before.duplicated)}\n"
        f"  redriven           {len(messages)} ({len(outcome.replay_failures)} failed); uploads "
        f"with exactly one task after: {after.with_one_task} of {len(outcome.uploads)}\n"
        f"  simulated          {outcome.settled_at / 60:.0f} min, {outcome.sim.events} events"
    )

    assert not before.unknown, f"tasks for uploads never made (key decoding?): {before.unknown[:5]}"
    assert not before.lost, f"{len(before.lost)} uploads got neither a task nor a dead letter"
    assert not before.duplicated, (
        f"{len(before.duplicated)} uploads got more than one task or dead letter: "
        f"{before.duplicated[:5]}"
    )
    assert before.expired == 0, "SQS dropped messages at the end of their retention"
    for record in records:
        (s3_record,) = record["requestPayload"]["Records"]
        key = unquote_plus(s3_record["s3"]["object"]["key"])
        assert record["requestContext"]["approximateInvokeCount"] == 3
        assert key in record["responsePayload"]["errorMessage"], (
            f"the dead letter's error does not name its key {key!r}"
        )
        assert "InvalidParameterException" in record["responsePayload"]["errorMessage"]
    if FAULT_RATE > 0:
        # Without these the proof would prove nothing about the paths it claims to cover.
        assert set(outcome.ecs.faults_given) == {
            "throttling",
            "capacity",
            "lost-answer",
            "rejected",
        }
        assert records, "no upload was dead-lettered: the redrive went untested"
        assert stats.async_retries > 0
    assert outcome.ecs.bucket.refused > 0, "the launch bucket never throttled"
    assert outcome.ecs.calls["RunTask:limit"] > 0, "no upload had to wait for the account limit"
    assert stats.invocations["backlog"] > 0
    assert not outcome.replay_failures, f"the redrive failed for: {outcome.replay_failures[:5]}"
    assert not after.unknown
    assert after.with_one_task == len(outcome.uploads), (
        f"after the redrive, {len(outcome.uploads) - after.with_one_task} uploads have not "
        f"exactly one task: {after.duplicated[:5]}"
    )
