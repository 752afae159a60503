"""The small JSON reads of resumable runs treat any unreadable file as absent, with a warning."""

from __future__ import annotations

import logging

import pytest

from prunekit.files import atomic_write_text, read_json_object


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"{not json", b"[" * 100_000, b"[1, 2]"])
def test_unreadable_or_non_object_json_reads_as_none(tmp_path, caplog, content) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="prunekit.files"):
        assert read_json_object(path, then="it is computed again") is None
    if content != b"[1, 2]":
        assert "it is computed again" in caplog.text


def test_a_written_object_reads_back(tmp_path) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, '{"a": 1}')
    assert read_json_object(path, then="x") == {"a": 1}
    assert read_json_object(tmp_path / "missing.json", then="x") is None
