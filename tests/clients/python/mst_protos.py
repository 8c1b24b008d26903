"""Python stubs of the mst-dossiers contracts, generated at run time from the published .proto
files with grpcio-tools (which ships protoc and the well-known types). Nothing else from the
repository is needed: copy proto/ and this file to use the API from another platform."""

import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTOS = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))


def load(proto_root=DEFAULT_PROTOS):
    """Generates the modules into a temporary directory and puts it on sys.path."""
    out = tempfile.mkdtemp(prefix="mst-protos-")
    files = sorted(glob.glob(os.path.join(proto_root, "mst", "**", "*.proto"), recursive=True))
    if not files:
        raise SystemExit(f"no .proto files under {proto_root}")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
         f"--python_out={out}", f"--grpc_python_out={out}", *files],
        check=True,
    )
    sys.path.insert(0, out)
    return out
