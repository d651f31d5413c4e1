"""The desktop side of the Android picture loop's equivalence test (tests/test_android_multimodal.py).

Runs in a venv with onnxruntime 1.29.0 (the app's engine) and answers the JVM's OnnxEngine and
PromptTokenizer calls (android_demo/.../core/OnnxEngine.java, PromptTokenizer.java) over stdin/stdout:

    python android_mm_bridge.py ARTIFACT THREADS

Each message, both ways: a 4-byte big-endian length + a UTF-8 JSON header, then a 4-byte length + a
binary payload (tensor bytes, little-endian, row-major; often empty). Values stay here (numpy arrays
by id) until the JVM frees them, as OnnxTensors stay native on the phone. Graph sessions are built as
edgepack.runtime builds them (onnx_vision.session / OnnxBackend: CPU, intra-op THREADS, inter-op 1,
no memory pattern for the decoder); no IOBinding: the JVM feeds each run's presents back as pasts.
The tokenizer is edgepack's own (edgepack.model.tokenizer, the artifact's files; detok.Detokenizer
for the stream): the one `edgepack run` uses, so the comparison is about the ONNX call sequence.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}
NAMES = {np.dtype(v): k for k, v in TYPES.items()}


def read_frame(f):
    head = f.read(4)
    if len(head) < 4:
        return None, b""
    header = json.loads(f.read(struct.unpack(">i", head)[0]).decode("utf-8"))
    payload = f.read(struct.unpack(">i", f.read(4))[0])
    return header, payload


def write_frame(f, header, payload=b""):
    h = json.dumps(header).encode("utf-8")
    f.write(struct.pack(">i", len(h)) + h + struct.pack(">i", len(payload)) + payload)
    f.flush()


class Bridge:
    def __init__(self, artifact, threads):
        from edgepack.model.tokenizer import load_tokenizer

        root = Path(artifact)
        m = json.loads((root / "edgepack.json").read_text(encoding="utf-8"))
        entry = next(a for a in m["artifacts"] if a["format"] == "onnx")
        self.onnx_dir, self.threads = root / entry["path"], int(threads)
        tk = m["tokenizer"]
        self.tok = load_tokenizer(root / (tk.get("path") or "tokenizer"), bos_id=tk.get("bos_id"),
                                  eos_ids=tk.get("eos_ids") or None)
        self.graphs, self.values, self.streams, self.next = {}, {}, {}, 1
        self.runs = []  # (graph file, sorted input names) per run: the call sequence, for the test

    def new_id(self):
        self.next += 1
        return self.next

    def op_open(self, h, _):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = self.threads, 1
        if h["file"] == "decoder_embeds.onnx":
            so.enable_mem_pattern = False  # as OnnxBackend's decoder session
        path = self.onnx_dir / h["file"]
        if not path.is_file():
            return {"error": f"{h['file']} is not in {self.onnx_dir.name}/"}
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        g = self.new_id()
        self.graphs[g] = (h["file"], s)
        return {"graph": g, "inputs": [[i.name, i.type] for i in s.get_inputs()],
                "outputs": [o.name for o in s.get_outputs()]}

    def op_value(self, h, payload):
        a = np.frombuffer(payload, dtype=np.dtype(TYPES[h["type"]]).newbyteorder("<")).astype(TYPES[h["type"]])
        v = self.new_id()
        self.values[v] = a.reshape(h["shape"])
        return {"value": v}

    def op_run(self, h, _):
        file, s = self.graphs[h["graph"]]
        feed = {name: self.values[v] for name, v in h["inputs"].items()}
        self.runs.append([file, sorted(feed)])
        outs = s.run(h["outputs"], feed)
        res = {}
        for name, a in zip(h["outputs"], outs):
            v = self.new_id()
            self.values[v] = a
            res[name] = [v, NAMES[a.dtype], list(a.shape)]
        return {"values": res}

    def op_read(self, h, _):
        a = self.values[h["value"]]
        return {"type": NAMES[a.dtype], "shape": list(a.shape)}, np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()

    def op_free(self, h, _):
        self.values.pop(h["value"], None)
        return {}

    def op_close_graph(self, h, _):
        self.graphs.pop(h["graph"], None)
        return {}

    def op_tokenizer(self, h, _):
        t = self.tok
        return {"bos": -1 if t.bos_id is None else t.bos_id, "add_bos": bool(t.add_bos), "eos": list(t.eos_ids)}

    def op_render(self, h, _):
        return {"text": self.tok.render_chat(h["messages"])}

    def op_encode(self, h, _):
        return {"ids": self.tok.encode(h["text"], add_bos=False)}

    def op_token_id(self, h, _):
        tid = self.tok.token_id(h["text"])
        return {"id": -1 if tid is None else int(tid)}

    def op_piece(self, h, _):
        return {"piece": self.tok.piece(h["id"])}

    def op_stream_new(self, h, _):
        from edgepack.runtime.detok import Detokenizer

        s = self.new_id()
        self.streams[s] = Detokenizer(self.tok)
        return {"stream": s}

    def op_stream_add(self, h, _):
        return {"text": self.streams[h["stream"]].add(h["id"])}

    def op_stream_finish(self, h, _):
        return {"text": self.streams.pop(h["stream"]).finish()}

    def op_stats(self, h, _):
        return {"live_values": len(self.values), "graphs": len(self.graphs), "runs": self.runs}


def main(artifact, threads):
    b = Bridge(artifact, threads)
    fin, fout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the protocol stream
    while True:
        h, payload = read_frame(fin)
        if h is None or h.get("op", "quit") == "quit":
            return
        try:
            res = getattr(b, "op_" + h["op"])(h, payload)
        except Exception as e:  # the JVM side turns it into one ArtifactException line
            res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        header, out = res if isinstance(res, tuple) else (res, b"")
        write_frame(fout, header, out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
