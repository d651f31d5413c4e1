"""How fast this machine reads memory, and what that bounds decode at.

A decode step reads every weight once (the tied int4 table too: the lm_head is a MatMulNBits over it)
plus the KV cache filled so far, and does little arithmetic per byte: on a CPU whose cores keep up,
tokens/s cannot exceed read bandwidth ÷ bytes read per token. `edgepack bench` measures the
bandwidth with the probe below in the same run as the engines (machines differ, and a shared machine's
figure drifts with its load) and reports each decode figure as a fraction of that bound.

The probe reads a buffer far larger than the last-level cache (PROBE_BYTES, float32) with `threads`
threads, two ways, and keeps the best of REPEATS rounds of the faster one: onnxruntime's ReduceMax
(intra-op threads, the library that runs the decode) and numpy's max, one slice per Python thread
(numpy releases the GIL inside the reduction). Measured here (Intel Xeon with AMX, 2 cores, 512 MiB,
load average ~2): ReduceMax 18.4 GB/s with 1 thread and 18.6 with 2; numpy 15.0 and 14.9-18.2.
"""
import threading
import time

import numpy as np

PROBE_BYTES = 512 << 20
REPEATS = 5


def _ort_reader(threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], "read_probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {"x": x})


def _numpy_reader(threads):
    def read(x):
        ts = [threading.Thread(target=np.max, args=(part,)) for part in np.array_split(x.reshape(-1), int(threads))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return read


def read_bandwidth(threads, nbytes=PROBE_BYTES, repeats=REPEATS):
    """{"read_bytes_per_s": the best, "by_method": {...}, "threads", "probe_bytes", "method"}."""
    x = np.ones((nbytes // 4 // 65536, 65536), np.float32)  # written once: every page is resident
    by = {}
    for name, make in (("onnxruntime ReduceMax", _ort_reader), ("numpy max, one slice per thread", _numpy_reader)):
        read, best = make(threads), 0.0
        read(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            read(x)
            best = max(best, x.nbytes / (time.perf_counter() - t))
        by[name] = round(best)
    del x
    return {"read_bytes_per_s": max(by.values()), "by_method": by, "threads": int(threads), "probe_bytes": int(nbytes),
            "method": f"best of {repeats} reads of a float32 buffer of {nbytes >> 20} MiB (edgepack/bench/bandwidth.py)"}


def decode_bound_tok_s(bandwidth, weight_bytes, kv_bytes_per_token, n_past):
    """Tokens/s if a decode step at n_past cached tokens did nothing but read the weights and the cache."""
    return bandwidth / (weight_bytes + kv_bytes_per_token * n_past)
