package org.edgepack.demo.bridge;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.Half;
import org.edgepack.demo.core.OnnxEngine;
import org.edgepack.demo.core.PromptTokenizer;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * core's OnnxEngine and PromptTokenizer over a Python process (tests/android_mm_bridge.py) running
 * onnxruntime 1.29.0 and edgepack's tokenizer: the desktop stand-in for the app's OrtEngine and
 * genai tokenizer in the equivalence test. Frames: 4-byte length + JSON header, 4-byte length + payload.
 */
public final class PyBridge implements OnnxEngine, PromptTokenizer {

    private final Process process;
    private final DataOutputStream out;
    private final DataInputStream in;
    private final JSONObject tokInfo;

    public PyBridge(String python, String script, String artifact, int threads) throws IOException, ArtifactException {
        ProcessBuilder pb = new ProcessBuilder(python, script, artifact, Integer.toString(threads));
        pb.redirectError(ProcessBuilder.Redirect.INHERIT);
        process = pb.start();
        out = new DataOutputStream(new BufferedOutputStream(process.getOutputStream()));
        in = new DataInputStream(new BufferedInputStream(process.getInputStream()));
        tokInfo = call(op("tokenizer"));
    }

    private byte[] lastPayload;

    synchronized JSONObject call(JSONObject header, byte[] payload) throws ArtifactException {
        try {
            byte[] h = header.toString().getBytes("UTF-8");
            out.writeInt(h.length);
            out.write(h);
            out.writeInt(payload.length);
            out.write(payload);
            out.flush();
            byte[] rh = new byte[in.readInt()];
            in.readFully(rh);
            lastPayload = new byte[in.readInt()];
            in.readFully(lastPayload);
            JSONObject res = new JSONObject(new String(rh, "UTF-8"));
            if (res.has("error")) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: " + (String) get(res, "error"));
            }
            return res;
        } catch (IOException e) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "the Python bridge died: " + e);
        } catch (JSONException e) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "bad bridge reply: " + e.getMessage());
        }
    }

    JSONObject call(JSONObject header) throws ArtifactException {
        return call(header, new byte[0]);
    }

    /** A request: op name then key, value pairs. */
    static JSONObject op(String name, Object... kv) {
        try {
            JSONObject o = new JSONObject().put("op", name);
            for (int i = 0; i < kv.length; i += 2) {
                o.put((String) kv[i], kv[i + 1]);
            }
            return o;
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static JSONObject obj(JSONObject o, String k) {
        try {
            return o.getJSONObject(k);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static JSONArray arr(JSONObject o, String k) {
        try {
            return o.getJSONArray(k);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static JSONArray arr(JSONArray o, int k) {
        try {
            return o.getJSONArray(k);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static Object get(JSONObject o, String k) {
        try {
            return o.get(k);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static Object get(JSONArray o, int k) {
        try {
            return o.get(k);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static JSONObject put(JSONObject o, String k, Object v) {
        try {
            return o.put(k, v);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    static int num(Object v) {
        return ((Number) v).intValue();
    }

    static int[] ints(JSONArray a) {
        int[] ids = new int[a.length()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = num(get(a, i));
        }
        return ids;
    }

    /** Bridge bookkeeping: live values, open graphs, the (graph, inputs) of every run. */
    public JSONObject stats() throws ArtifactException {
        return call(op("stats"));
    }

    // ---- OnnxEngine

    final class Val implements Value {
        final int id;
        final String type;
        final long[] shape;
        boolean closed;

        Val(int id, String type, long[] shape) {
            this.id = id;
            this.type = type;
            this.shape = shape;
        }

        public String type() {
            return type;
        }

        public long[] shape() {
            return shape.clone();
        }

        public float[] readFloats() throws ArtifactException {
            call(op("read", "value", id));
            ByteBuffer b = ByteBuffer.wrap(lastPayload).order(ByteOrder.LITTLE_ENDIAN);
            if (type.equals(FLOAT)) {
                float[] f = new float[lastPayload.length / 4];
                b.asFloatBuffer().get(f);
                return f;
            }
            if (type.equals(FLOAT16)) {
                float[] f = new float[lastPayload.length / 2];
                for (int i = 0; i < f.length; i++) {
                    f[i] = Half.toFloat(b.getShort());
                }
                return f;
            }
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "readFloats of a " + type + " value");
        }

        public float[] readFloats(long offset, int count) throws ArtifactException {
            return java.util.Arrays.copyOfRange(readFloats(), (int) offset, (int) offset + count);  // the bridge's own cost
        }

        public long[] readLongs() throws ArtifactException {
            call(op("read", "value", id));
            long[] l = new long[lastPayload.length / 8];
            ByteBuffer.wrap(lastPayload).order(ByteOrder.LITTLE_ENDIAN).asLongBuffer().get(l);
            return l;
        }

        public void close() {
            if (!closed) {
                closed = true;
                try {
                    call(op("free", "value", id));
                } catch (ArtifactException e) {
                    throw new IllegalStateException(e.getMessage());
                }
            }
        }
    }

    private Value value(String type, long[] shape, byte[] bytes) throws ArtifactException {
        JSONArray s = new JSONArray();
        for (long d : shape) {
            s.put(Long.valueOf(d));
        }
        int id = num(get(call(op("value", "type", type, "shape", s), bytes), "value"));
        return new Val(id, type, shape.clone());
    }

    public Value floats(float[] data, long[] shape) throws ArtifactException {
        ByteBuffer b = ByteBuffer.allocate(4 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(data);
        return value(FLOAT, shape, b.array());
    }

    public Value float16(short[] data, long[] shape) throws ArtifactException {
        ByteBuffer b = ByteBuffer.allocate(2 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asShortBuffer().put(data);
        return value(FLOAT16, shape, b.array());
    }

    public Value longs(long[] data, long[] shape) throws ArtifactException {
        ByteBuffer b = ByteBuffer.allocate(8 * data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.asLongBuffer().put(data);
        return value(INT64, shape, b.array());
    }

    public Graph open(String fileName) throws ArtifactException {
        final JSONObject r = call(op("open", "file", fileName));
        final int gid = num(get(r, "graph"));
        final Map<String, String> inputs = new LinkedHashMap<String, String>();
        JSONArray ins = arr(r, "inputs");
        for (int i = 0; i < ins.length(); i++) {
            inputs.put((String) get(arr(ins, i), 0), (String) get(arr(ins, i), 1));
        }
        final List<String> outputs = new ArrayList<String>();
        JSONArray os = arr(r, "outputs");
        for (int i = 0; i < os.length(); i++) {
            outputs.add((String) get(os, i));
        }
        return new Graph() {
            public Map<String, String> inputTypes() {
                return inputs;
            }

            public List<String> outputNames() {
                return outputs;
            }

            public Map<String, Value> run(Map<String, Value> feed, List<String> wanted) throws ArtifactException {
                JSONObject ids = new JSONObject();
                for (Map.Entry<String, Value> e : feed.entrySet()) {
                    ids = put(ids, e.getKey(), ((Val) e.getValue()).id);
                }
                JSONObject res = obj(call(op("run", "graph", gid, "inputs", ids, "outputs", new JSONArray(wanted))), "values");
                Map<String, Value> got = new LinkedHashMap<String, Value>();
                for (String name : wanted) {
                    JSONArray v = arr(res, name);
                    JSONArray s = arr(v, 2);
                    long[] shape = new long[s.length()];
                    for (int i = 0; i < shape.length; i++) {
                        shape[i] = ((Number) get(s, i)).longValue();
                    }
                    got.put(name, new Val(num(get(v, 0)), (String) get(v, 1), shape));
                }
                return got;
            }

            public void close() {
                try {
                    call(op("close_graph", "graph", gid));
                } catch (ArtifactException e) {
                    throw new IllegalStateException(e.getMessage());
                }
            }
        };
    }

    public void close() {
        try {
            byte[] quit = "{\"op\": \"quit\"}".getBytes("UTF-8");
            out.writeInt(quit.length);
            out.write(quit);
            out.writeInt(0);
            out.close();
            process.waitFor();
        } catch (IOException e) {
            process.destroy();
        } catch (InterruptedException e) {
            process.destroy();
        }
    }

    // ---- PromptTokenizer

    public String renderChat(List<Message> messages) throws ArtifactException {
        JSONArray a = new JSONArray();
        for (Message m : messages) {
            a.put(put(put(new JSONObject(), "role", m.role), "content", m.content));
        }
        return (String) get(call(op("render", "messages", a)), "text");
    }

    public int[] encode(String text) throws ArtifactException {
        JSONArray a = arr(call(op("encode", "text", text)), "ids");
        int[] ids = new int[a.length()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = num(get(a, i));
        }
        return ids;
    }

    public int bosId() {
        return num(get(tokInfo, "bos"));
    }

    public boolean addsBos() {
        return (Boolean) get(tokInfo, "add_bos");
    }

    public int tokenId(String text) {
        try {
            return num(get(call(op("token_id", "text", text)), "id"));
        } catch (ArtifactException e) {
            throw new IllegalStateException(e.getMessage());
        }
    }

    public String piece(int id) {
        try {
            return (String) get(call(op("piece", "id", id)), "piece");
        } catch (ArtifactException e) {
            throw new IllegalStateException(e.getMessage());
        }
    }

    public int[] eosIds() {
        JSONArray a = arr(tokInfo, "eos");
        int[] ids = new int[a.length()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = num(get(a, i));
        }
        return ids;
    }

    public Stream newStream() {
        final int sid;
        try {
            sid = num(get(call(op("stream_new")), "stream"));
        } catch (ArtifactException e) {
            throw new IllegalStateException(e.getMessage());
        }
        return new Stream() {
            public String add(int id) throws ArtifactException {
                return (String) get(call(op("stream_add", "stream", sid, "id", id)), "text");
            }

            public String finish() throws ArtifactException {
                return (String) get(call(op("stream_finish", "stream", sid)), "text");
            }
        };
    }

    static String shape(long[] s) {
        return Arrays.toString(s);
    }
}
