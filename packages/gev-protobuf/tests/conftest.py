"""Shared fixtures: protobuf classes compiled from tests/proto at test time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from grpc_tools import protoc

PROTO_DIR = Path(__file__).parent / "proto"


@pytest.fixture(scope="session")
def echo_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The module protoc generates from ``echo_test.proto`` (messages Msg1, Msg2, Response)."""
    out = tmp_path_factory.mktemp("pb2")
    # protoc.main's argv[0] is the program name and is ignored.
    status = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", str(PROTO_DIR / "echo_test.proto")]
    )
    assert status == 0, f"protoc failed with status {status}"
    path = out / "echo_test_pb2.py"
    spec = importlib.util.spec_from_file_location("echo_test_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Generated code looks itself up in sys.modules while building its descriptors.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
