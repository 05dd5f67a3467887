"""Compile ``user.proto`` with grpc_tools at run time and import the generated module.

The examples keep no generated code: protoc's output depends on the protobuf version, so it is
built for whichever one is installed (``pip install grpcio-tools``).
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def load(proto: str = "user.proto") -> ModuleType:
    """Return the ``*_pb2`` module protoc generates from ``proto`` (next to this file)."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit(
            "these examples compile user.proto at run time: pip install grpcio-tools"
        ) from None
    out = Path(tempfile.mkdtemp(prefix="gev-proto-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    # argv[0] is the program name and ignored.
    status = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out}", str(HERE / proto)])
    if status != 0:
        raise SystemExit(f"protoc failed on {proto} with status {status}")
    name = Path(proto).stem + "_pb2"
    spec = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The generated code looks itself up in sys.modules while building its descriptors.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
