"""A Python host for models that carry their own copy of onnx-mlir's loader
(see host.c beside this file), the way Python deployments load them:

    python3 host.py WAY LIB MODEL.so [MODEL.so ...]

    dlopen-global  ctypes.CDLL(LIB, mode=RTLD_GLOBAL) before any model, then
                   each model with ctypes.CDLL (RTLD_LOCAL, Python's default)
    session-v05, session-released, session-newest
                   as dlopen-global, and each model opened as that release
                   line of onnx-mlir's PyRuntime / OMExecutionSession opens
                   it (the C++ ExecutionSession underneath; host.c beside
                   this file lists what each does with OM_CONSTANT_PATH)
    package-v05, package-released, package-newest
                   `import om_constants` (the Python package, python/ in
                   the repository) before any model, then each model as
                   session-<line>; LIB is "-"
    package-late   the first model opened as session-released, then
                   `import om_constants`, then the others: prints
                   "warned=1" when the import warned that the first model's
                   loader holds the global names

LIB "-" loads no library.

It prints the same `key=value` lines as host.c for tests/onnx_mlir.rs to
judge, and a closing line "N passed, M failed" for its own checks.
"""

import ctypes
import os
import struct
import sys

MASK = (1 << 64) - 1


def expected(constants):
    """The results of c_tests/model_compute.ll for this constants file,
    computed with plain reads (the oracle of c_tests/oracle.h)."""
    with open(constants, "rb") as f:
        a = struct.unpack("=1024q", f.read(8 * 1024))
        f.seek(8192)
        b = struct.unpack("=512q", f.read(8 * 512))
        f.seek(4 << 30)
        c = struct.unpack("=512q", f.read(8 * 512))
    total = sum(x & MASK for x in a) & MASK
    dot = sum((x & MASK) * (y & MASK) for x, y in zip(b, c)) & MASK
    signed = lambda v: v - (1 << 64) if v >> 63 else v
    return signed(total), signed(dot)


def om_stat(lib, field):
    """om_constants_stats through ctypes; fields as in host.c."""
    if "om_constants" in sys.modules:
        s = sys.modules["om_constants"].stats()
        return {6: s.loads, 1: s.live_buffers}[field]
    if lib is None:
        return -1
    stats = (ctypes.c_uint64 * 64)()
    stats[0] = ctypes.sizeof(stats)
    lib.om_constants_stats.restype = ctypes.c_bool
    if not lib.om_constants_stats(stats):
        return -1
    return stats[field]


def base_of(model):
    """The model path up to its last '/' (ExecutionSession's basePath)."""
    return model.rsplit("/", 1)[0] if "/" in model else None


def open_session(model, line):
    """Opens `model` as release line `line` of ExecutionSession does."""
    base = base_of(model)
    mode = os.RTLD_LAZY | os.RTLD_GLOBAL
    if line == "released" and base and "OM_CONSTANT_PATH" not in os.environ:
        os.environ["OM_CONSTANT_PATH"] = base
    set_here = False
    if line == "newest" and "OM_CONSTANT_PATH" not in os.environ and base:
        os.environ["OM_CONSTANT_PATH"] = base
        set_here = True
    handle = ctypes.CDLL(model, mode=mode)
    if line == "v05" and base and "OM_CONSTANT_PATH" not in os.environ:
        os.environ["OM_CONSTANT_PATH"] = base
    if set_here:
        del os.environ["OM_CONSTANT_PATH"]
    return handle


def main():
    if len(sys.argv) < 4:
        print("usage: host.py WAY LIB MODEL.so [MODEL.so ...]", file=sys.stderr)
        return 2
    way, lib_path, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    checks = failures = 0
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL) if lib_path != "-" else None
    if way.startswith("package-") and way != "package-late":
        import om_constants  # noqa: F401  (before any model, as documented)

        way = "session-" + way[len("package-") :]
    handles = []
    for model in models:
        if way == "package-late":
            handles.append(open_session(model, "released"))
            if "om_constants" not in sys.modules:
                import warnings

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    import om_constants
                said = [str(w.message) for w in caught if issubclass(w.category, om_constants.LoaderShadowedWarning)]
                fix = any("import om_constants before PyRuntime" in m for m in said)
                print(f"warned={int(bool(said))} fix={int(fix)}")
        elif way.startswith("session-"):
            handles.append(open_session(model, way[len("session-") :]))
        else:
            handles.append(ctypes.CDLL(model))
    for i, (model, h) in enumerate(zip(models, handles)):
        want = expected(os.path.join(os.path.dirname(model), "model.constants.bin"))
        out = (ctypes.c_int64 * 2)()
        h.run_main_graph.restype = ctypes.c_bool
        ok = bool(h.run_main_graph(out))
        match = ok and (out[0], out[1]) == want
        try:
            standin = ctypes.c_int.in_dll(h, "om_standin_loads").value
        except ValueError:
            standin = -1
        print(f"model={i} ok={int(ok)} match={int(match)} standin_loads={standin}")
    print(f"om_loads={om_stat(lib, 6)} om_live_open={om_stat(lib, 1)}", flush=True)
    import _ctypes

    for h in handles:
        checks += 1
        try:
            _ctypes.dlclose(h._handle)
        except OSError as e:
            failures += 1
            print(f"FAIL dlclose: {e}", file=sys.stderr)
    print(f"om_live_closed={om_stat(lib, 1)}")
    print(f"{checks - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
