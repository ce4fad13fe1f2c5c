#!/usr/bin/env python3
"""Calls liboasync's C ABI from Python with ctypes, as a Rust FFI, a BEAM NIF or
any other foreign caller would. Usage: c_abi_caller.py LIBOASYNC.so CONNINFO"""
import ctypes
import sys

from openagents.sync.v1 import sink_pb2, sync_pb2

lib = ctypes.CDLL(sys.argv[1])
conninfo = sys.argv[2].encode()

lib.oasync_abi_version.restype = ctypes.c_int
lib.oasync_sink_open.restype = ctypes.c_void_p
lib.oasync_sink_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
lib.oasync_sink_apply.restype = ctypes.c_int
lib.oasync_sink_apply.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                  ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
lib.oasync_sink_close.argtypes = [ctypes.c_void_p]
lib.oasync_free.argtypes = [ctypes.c_void_p]

print("abi version", lib.oasync_abi_version())

error = ctypes.c_void_p()
handle = lib.oasync_sink_open(b"postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2", ctypes.byref(error))
message = ctypes.cast(error, ctypes.c_char_p).value.decode()
assert handle is None and "127.0.0.1" in message and "pw" not in message, message
lib.oasync_free(error)
print("open with a bad conninfo: NULL, error names the target")

handle = lib.oasync_sink_open(conninfo, ctypes.byref(error))
assert handle, ctypes.cast(error, ctypes.c_char_p).value


def apply(request: bytes) -> sink_pb2.BatchResult:
    out = ctypes.c_void_p()
    out_len = ctypes.c_size_t()
    rc = lib.oasync_sink_apply(handle, request, len(request), ctypes.byref(out), ctypes.byref(out_len))
    assert rc == 0, rc
    result = sink_pb2.BatchResult()
    result.ParseFromString(ctypes.string_at(out, out_len.value))
    lib.oasync_free(out)
    return result


batch = sink_pb2.WriteBatch()
for key, payload, seq in (("a", b'{"n":1}', 1), ("b", b"[1]", 1), ("c", b'{"n":3}', None)):
    w = batch.writes.add(topic="runtime.run_summaries", doc_key="run_summary:" + key,
                         op=sync_pb2.OP_UPSERT, payload=payload, source_stream="run:" + key)
    if seq is not None:
        w.source_seq = seq
names = {v: k for k, v in sink_pb2.Outcome.items()}
reasons = {v: k for k, v in sink_pb2.RejectReason.items()}


def describe(r):
    name = names[r.outcome].replace("OUTCOME_", "").lower()
    if r.outcome == sink_pb2.OUTCOME_APPLIED:
        return f"{name} v{r.doc_version} w{r.watermark}"
    if r.outcome == sink_pb2.OUTCOME_REJECTED:
        return f"{name} {reasons[r.reason].replace('REJECT_REASON_', '').lower()}"
    return name


result = apply(batch.SerializeToString())
assert not result.HasField("error"), result.error
print("batch:", ", ".join(describe(r) for r in result.results))
result = apply(batch.SerializeToString())
print("resend:", ", ".join(describe(r) for r in result.results))
result = apply(b"\xff\xff not a batch")
print("malformed request:", result.error.code)
lib.oasync_sink_close(handle)
print("closed")
