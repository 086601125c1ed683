"""A stand-in for onnx-mlir's PyRuntime module, for the README's "Use from
Python" example (tests/onnx_mlir/python.rs): OMExecutionSession opens the
model as the released PyRuntime's C++ ExecutionSession does (host.py beside
this file, "session-released"); running a model is not part of it.
"""

from host import open_session


class OMExecutionSession:
    """Opens `shared_lib_path` as onnx-mlir's released ExecutionSession
    does: RTLD_LAZY | RTLD_GLOBAL, OM_CONSTANT_PATH set to the model's
    folder when the path has one and the variable is unset."""

    def __init__(self, shared_lib_path, tag=None):
        self._handle = open_session(shared_lib_path, "released")
