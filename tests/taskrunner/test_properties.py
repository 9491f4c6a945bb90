"""Properties: any key survives S3's encoding; the job id follows the upload, not the delivery."""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st
from job_record import claim
from runner_settings import load_settings
from task_starter import build_run_task_request
from upload_events import job_id, parse_event, parse_record
from uploads import job_for

from tests.taskrunner.conftest import RUNNER_ENV, s3_event, s3_record

RUNNER_SETTINGS = load_settings(RUNNER_ENV)

# S3 keys: 1 to 1,024 bytes of UTF-8; surrogates cannot be encoded, so they cannot be keys.
keys = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300).filter(
    lambda key: len(key.encode("utf-8")) <= 1024
)
# "null" is the version id S3 gives an unversioned object: the id then follows the sequencer.
identities = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40
).filter(lambda value: value != "null")


@settings(max_examples=200, deadline=None)
@given(key=keys, slash_encoded=st.booleans())
def test_any_key_encoded_as_s3_does_reaches_the_task_unchanged(
    key: str, slash_encoded: bool
) -> None:
    record = s3_record(key)
    # Real S3 leaves '/' alone, moto encodes it: both must decode to the same key.
    record["s3"]["object"]["key"] = quote_plus(key, safe="" if slash_encoded else "/")
    (upload,) = parse_event(s3_event(record))
    job = claim(job_for(upload, now=0.0), now=0.0, default_provider="FARGATE")
    assert job.current is not None
    request = build_run_task_request(job, job.current, RUNNER_SETTINGS)
    environment = {
        pair["name"]: pair["value"]
        for pair in request["overrides"]["containerOverrides"][0]["environment"]
    }
    assert environment["S3_KEY"] == key


@given(key=keys)
def test_percent_encoded_spaces_decode_like_plus_encoded_ones(key: str) -> None:
    record = s3_record(key)
    record["s3"]["object"]["key"] = quote(key, safe="/")
    assert parse_record(record).key == key


@given(key=keys, version=st.one_of(st.none(), identities), sequencer=identities)
def test_the_job_id_is_stable_for_the_same_upload(
    key: str, version: str | None, sequencer: str
) -> None:
    first = parse_record(s3_record(key, version_id=version, sequencer=sequencer))
    again = parse_record(s3_record(key, version_id=version, sequencer=sequencer))
    assert job_id(first) == job_id(again)


@given(
    uploads=st.tuples(keys, st.one_of(st.none(), identities), identities),
    others=st.tuples(keys, st.one_of(st.none(), identities), identities),
)
def test_the_job_id_differs_for_different_uploads(
    uploads: tuple[str, str | None, str], others: tuple[str, str | None, str]
) -> None:
    first = parse_record(s3_record(uploads[0], version_id=uploads[1], sequencer=uploads[2]))
    second = parse_record(s3_record(others[0], version_id=others[1], sequencer=others[2]))
    # The same key and the same identity (version if versioned, else sequencer) is one upload.
    same_upload = first.key == second.key and (
        (first.version_id, first.sequencer if first.version_id is None else None)
        == (second.version_id, second.sequencer if second.version_id is None else None)
    )
    assert (job_id(first) == job_id(second)) == same_upload
