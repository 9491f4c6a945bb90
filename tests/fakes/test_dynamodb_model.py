"""The DynamoDB model's own bookkeeping: what the proofs' cost figures rest on."""

from __future__ import annotations

from tests.fakes.dynamodb_model import DynamoModel, Table


def test_an_items_size_after_updates_is_the_size_it_would_have_measured_whole() -> None:
    model = DynamoModel(lambda: 0.0)
    table = model.create(Table("jobs"))
    key = {"pk": {"S": "upload#b/k"}, "sk": {"S": "job#1"}}
    model.put({"TableName": "jobs", "Item": {**key, "state": {"S": "waiting"}, "n": {"N": "1"}}})
    updates = [
        ("SET #s = :s, #a = :a", {":s": {"S": "running"}, ":a": {"L": [{"M": {"x": {"N": "1"}}}]}}),
        ("REMOVE #n", {}),
        ("ADD #c :c", {":c": {"N": "5"}}),
        ("SET #a = :a, #s = :s", {":a": {"L": []}, ":s": {"S": "a longer state"}}),
    ]
    names = {"#s": "state", "#a": "attempts", "#n": "n", "#c": "count"}
    for expression, values in updates:
        request = {"TableName": "jobs", "Key": key, "UpdateExpression": expression}
        used = {name: value for name, value in names.items() if name in expression}
        model.update(
            request
            | {"ExpressionAttributeNames": used}
            | ({"ExpressionAttributeValues": values} if values else {})
        )
        stored = table.items[("upload#b/k", "job#1")]
        assert table.sizes[("upload#b/k", "job#1")] == len(repr(stored))
