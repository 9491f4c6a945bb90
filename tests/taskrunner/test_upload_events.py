"""Parsing S3 events into uploads, from the corpus of shapes S3 really sends, and their tokens."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from upload_events import (
    Upload,
    decode_key,
    is_test_event,
    job_id,
    parse_event,
    parse_record,
    upload_identity,
)

from tests.taskrunner.conftest import BUCKET, SPECIAL_KEYS, load_event, s3_record


@pytest.mark.parametrize(
    ("event_file", "keys", "event_names"),
    [
        ("put_single.json", ["uploads/report.csv"], ["ObjectCreated:Put"]),
        (
            "put_multiple.json",
            ["uploads/a.csv", "uploads/b.csv", "uploads/c.csv"],
            ["ObjectCreated:Put"] * 3,
        ),
        ("versioned_put.json", ["uploads/report.csv"], ["ObjectCreated:Put"]),
        ("post.json", ["uploads/form upload.txt"], ["ObjectCreated:Post"]),
        ("multipart_upload.json", ["uploads/big.bin"], ["ObjectCreated:CompleteMultipartUpload"]),
        ("copy.json", ["uploads/copied.csv"], ["ObjectCreated:Copy"]),
        ("special_keys.json", SPECIAL_KEYS, ["ObjectCreated:Put"] * len(SPECIAL_KEYS)),
        ("moto_unversioned.json", ["uploads/report 1.csv"], ["ObjectCreated:Put"]),
        (
            "removal_and_put.json",
            ["uploads/old.csv", "uploads/new.csv"],
            ["ObjectRemoved:Delete", "ObjectCreated:Put"],
        ),
    ],
)
def test_corpus_events_parse_to_decoded_keys_and_event_names(
    event_file: str, keys: list[str], event_names: list[str]
) -> None:
    uploads = parse_event(load_event(event_file))
    assert [upload.key for upload in uploads] == keys
    assert [upload.event_name for upload in uploads] == event_names
    assert {upload.bucket for upload in uploads} == {"uploads-bucket"}


def test_a_1024_byte_key_is_decoded_whole() -> None:
    (upload,) = parse_event(load_event("key_1024_bytes.json"))
    assert len(upload.key.encode("utf-8")) == 1024
    assert upload.key == "uploads/" + "é" * 508


def test_version_sequencer_etag_and_size_are_carried() -> None:
    (upload,) = parse_event(load_event("multipart_upload.json"))
    assert upload.version_id == "Vm9sb2xvbG8uTXVsdGlwYXJ0"
    assert upload.size == 5_368_709_120
    assert upload.etag == "d41d8cd98f00b204e9800998ecf8427e-640"
    assert upload.sequencer == "0062B5F3A8C1D2E3F4"
    assert upload.is_upload


def test_the_s3_test_event_is_recognised_and_yields_no_uploads() -> None:
    event = load_event("test_event.json")
    assert is_test_event(event)
    assert parse_event(event) == []


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a+b", "a b"),
        ("a%2Bb", "a+b"),
        ("100%25", "100%"),
        ("caf%C3%A9", "café"),
        ("%F0%9F%93%88", "📈"),
        ("uploads%2Freport.csv", "uploads/report.csv"),  # moto encodes '/', S3 does not
        ("uploads/report.csv", "uploads/report.csv"),
    ],
)
def test_keys_are_decoded_as_s3_encodes_them(encoded: str, decoded: str) -> None:
    assert decode_key(encoded) == decoded


@pytest.mark.parametrize(
    ("event_file", "message"),
    [
        ("malformed_no_records.json", "no 'Records'"),
        ("malformed_records_not_list.json", "non-empty list"),
        ("malformed_record_without_key.json", r"record 0: s3\.object\.key is missing"),
        ("malformed_record_without_bucket.json", r"record 0: s3\.bucket\.name is missing"),
        ("malformed_sqs_record.json", "not an S3 record .eventSource 'aws:sqs'"),
        ("malformed_invalid_utf8_key.json", "not valid percent-encoded UTF-8"),
    ],
)
def test_malformed_corpus_events_raise_value_error_saying_what_is_wrong(
    event_file: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_event(load_event(event_file))


@pytest.mark.parametrize(
    "event",
    [None, "Records", 42, [], {"Records": []}, {"Records": None}, {"Records": [None]}],
)
def test_events_of_the_wrong_type_raise_value_error_not_type_or_key_error(event: object) -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_event(event)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("s3",), "not an object"),
        (("s3", "bucket"), []),
        (("s3", "object", "key"), 7),
        (("s3", "object", "key"), ""),
        (("s3", "object", "size"), "12"),
        (("s3", "object", "size"), True),
        (("s3", "object", "versionId"), 3),
        (("eventName",), None),
    ],
)
def test_records_with_wrongly_typed_fields_raise_value_error(
    path: tuple[str, ...], value: object
) -> None:
    record = s3_record("uploads/x.csv")
    parent = record
    for name in path[:-1]:
        parent = parent[name]
    parent[path[-1]] = value
    with pytest.raises(ValueError, match="malformed record 3"):
        parse_record(record, 3)


def test_the_job_id_is_32_hex_characters() -> None:
    (upload,) = parse_event(load_event("key_1024_bytes.json"))
    found = job_id(upload)
    assert len(found) == 32
    assert all(char in "0123456789abcdef" for char in found)


def test_a_duplicate_delivery_has_the_same_job_id() -> None:
    first = parse_record(s3_record("uploads/a.csv"))
    again = parse_record(s3_record("uploads/a.csv"))
    assert job_id(first) == job_id(again)


@pytest.mark.parametrize(
    "change",
    [
        {"key": "uploads/b.csv"},
        {"bucket": "other-bucket"},
        {"sequencer": "0062B5F3A8C1D2E3F5"},
        {"version_id": "v2"},
    ],
)
def test_a_different_upload_has_a_different_job_id(change: dict[str, Any]) -> None:
    upload = Upload(BUCKET, "uploads/a.csv", "ObjectCreated:Put", version_id="v1", sequencer="1")
    if "sequencer" in change:
        upload = dataclasses.replace(upload, version_id=None)
    assert job_id(upload) != job_id(dataclasses.replace(upload, **change))


def test_the_version_decides_identity_when_the_bucket_is_versioned() -> None:
    upload = Upload(BUCKET, "k", "ObjectCreated:Put", version_id="v1", sequencer="0A")
    assert upload_identity(upload) == ("version", "v1")
    # A later event for the same version (e.g. a copy onto itself) is the same upload.
    assert job_id(upload) == job_id(dataclasses.replace(upload, sequencer="0B"))


def test_a_null_version_falls_back_to_the_sequencer() -> None:
    upload = Upload(BUCKET, "k", "ObjectCreated:Put", version_id="null", sequencer="0A")
    assert upload_identity(upload) == ("sequencer", "0A")


def test_without_version_or_sequencer_etag_size_and_event_time_identify_the_upload() -> None:
    (upload,) = parse_event(load_event("moto_unversioned.json"))
    assert upload.sequencer is None
    assert upload.version_id is None
    assert upload_identity(upload) == (
        "object",
        "0123456789abcdef0123456789abcdef",
        "1024",
        "2026-11-28T14:00:00.000Z",
    )
    reupload = dataclasses.replace(upload, event_time="2026-11-28T14:05:00.000Z")
    assert job_id(reupload) != job_id(upload)


def test_a_record_with_no_identity_at_all_gets_a_job_of_its_own_each_time() -> None:
    upload = Upload(BUCKET, "k", "ObjectCreated:Put")
    assert upload_identity(upload) is None
    assert job_id(upload) != job_id(upload)  # a possible duplicate, never a skipped upload


def test_a_redrive_names_the_same_job_as_the_upload_it_replays() -> None:
    upload = Upload("b", "uploads/a.csv", "ObjectCreated:Put", version_id="v1")
    assert job_id(dataclasses.replace(upload, redrive_of="0f" * 16 + "#1")) == job_id(upload)
