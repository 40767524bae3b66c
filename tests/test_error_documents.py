"""Apache's own refusals point to JSON files (served as application/json), never to quoted text Apache labels
text/html; and `serve` Includes the same documents as the location snippet."""

from __future__ import annotations

import json
import os
import re

from lockllm_wsgi.apache_config import TEMPLATE_DIR
from lockllm_wsgi.express import write_include


def _read(name: str) -> str:
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as handle:
        return handle.read()


def test_every_error_document_is_a_json_file_in_the_shipped_folder():
    documents = re.findall(r"^ErrorDocument (\d+) (\S+)$", _read("lockllm-errors.conf"), re.MULTILINE)
    assert [status for status, _ in documents] == ["413", "502", "503"]
    for status, url in documents:
        assert url == f"/lockllm-errors/{status}.json"
        with open(os.path.join(TEMPLATE_DIR, "errors", f"{status}.json"), encoding="utf-8") as handle:
            error = json.load(handle)["error"]
        assert error["code"] == error["type"] and error["message"]
    assert not re.search(r'^ErrorDocument \d+ "', _read("lockllm-errors.conf"), re.MULTILINE)  # text/html


def test_the_documents_are_forced_to_json():
    text = _read("lockllm-error-documents.conf")
    assert "Alias /lockllm-errors ${LOCKLLM_APACHE_DIR}/errors" in text and "ForceType application/json" in text
    assert "Include ${LOCKLLM_APACHE_DIR}/lockllm-error-documents.conf" in _read("lockllm-location.conf")


def test_serve_includes_the_documents_and_leaves_chunked_bodies_to_the_app(tmp_path):
    with open(write_include(str(tmp_path / "lockllm-express.conf"), TEMPLATE_DIR), encoding="utf-8") as handle:
        text = handle.read()
    assert f"Define LOCKLLM_APACHE_DIR {TEMPLATE_DIR}" in text
    assert f"Include {TEMPLATE_DIR}/lockllm-error-documents.conf" in text
    assert f"Include {TEMPLATE_DIR}/lockllm-errors.conf" in text
    assert "<If \"-z req('Content-Length')\">\n    LimitRequestBody 0\n</If>" in text
    assert "<If \"-z req('Content-Length')\">\n        LimitRequestBody 0\n    </If>" in _read("lockllm-location.conf")
