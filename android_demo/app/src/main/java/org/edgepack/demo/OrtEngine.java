package org.edgepack.demo;

import java.io.File;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.ShortBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.Half;
import org.edgepack.demo.core.OnnxEngine;

/**
 * core's OnnxEngine over onnxruntime 1.29.0's own Java API (downgraded for dx by tools/Downgrade.java):
 * one OrtEnvironment, one OrtSession per graph with the session options edgepack's runtime uses
 * (runtime/onnx_vision.session: intra-op threads as the text path, one inter-op thread, CPU), and values
 * kept as OnnxTensor, so the KV cache goes from one decoder run to the next without a copy into Java.
 * Every session and every tensor it made is closed by close(), so a second artifact finds the memory free.
 */
final class OrtEngine implements OnnxEngine {

    private final OrtEnvironment env;
    private final File onnxDir;
    private final int threads;
    private final List<OrtGraph> graphs = new ArrayList<OrtGraph>();
    /** Values not yet closed by their holder (closed at the latest by close()). */
    private final Set<OrtValue> live = Collections.newSetFromMap(new IdentityHashMap<OrtValue, Boolean>());
    private boolean closed;

    /** Throws UnsatisfiedLinkError when libonnxruntime4j_jni.so cannot load on this phone. */
    OrtEngine(File onnxDir, int threads) {
        this.env = OrtEnvironment.getEnvironment();
        this.onnxDir = onnxDir;
        this.threads = threads;
    }

    private static ArtifactException failure(String what, OrtException e) {
        return new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime " + what + ": " + e.getMessage());
    }

    private void checkOpen() throws ArtifactException {
        if (closed) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: the engine was closed");
        }
    }

    @Override
    public synchronized Graph open(String fileName) throws ArtifactException {
        checkOpen();
        File f = new File(onnxDir, fileName);
        OrtSession.SessionOptions options = new OrtSession.SessionOptions();
        try {
            options.setIntraOpNumThreads(threads);
            options.setInterOpNumThreads(1);
            OrtGraph g = new OrtGraph(fileName, env.createSession(f.getAbsolutePath(), options));
            graphs.add(g);
            return g;
        } catch (OrtException e) {
            throw failure("could not load " + fileName, e);
        } finally {
            options.close();
        }
    }

    @Override
    public Value floats(float[] data, long[] shape) throws ArtifactException {
        checkOpen();
        try {
            return track(OnnxTensor.createTensor(env, FloatBuffer.wrap(data), shape));
        } catch (OrtException e) {
            throw failure("float tensor", e);
        }
    }

    @Override
    public Value float16(short[] data, long[] shape) throws ArtifactException {
        checkOpen();
        try {
            return track(OnnxTensor.createTensor(env, ShortBuffer.wrap(data), shape, OnnxJavaType.FLOAT16));
        } catch (OrtException e) {
            throw failure("float16 tensor", e);
        }
    }

    @Override
    public Value longs(long[] data, long[] shape) throws ArtifactException {
        checkOpen();
        try {
            return track(OnnxTensor.createTensor(env, LongBuffer.wrap(data), shape));
        } catch (OrtException e) {
            throw failure("int64 tensor", e);
        }
    }

    private synchronized OrtValue track(OnnxTensor t) {
        OrtValue v = new OrtValue(t);
        live.add(v);
        return v;
    }

    @Override
    public synchronized void close() {
        for (OrtValue v : new ArrayList<OrtValue>(live)) {
            v.close();
        }
        for (OrtGraph g : new ArrayList<OrtGraph>(graphs)) {
            g.close();
        }
        closed = true;
    }

    /** Values the holders have not closed yet (for the log: 0 after an answer, but the KV cache). */
    synchronized int liveValues() {
        return live.size();
    }

    static String typeName(OnnxJavaType t) {
        if (t == OnnxJavaType.FLOAT) {
            return FLOAT;
        }
        if (t == OnnxJavaType.FLOAT16) {
            return FLOAT16;
        }
        if (t == OnnxJavaType.INT64) {
            return INT64;
        }
        return "tensor(" + t.name().toLowerCase(java.util.Locale.ROOT) + ")";
    }

    private final class OrtValue implements Value {
        final OnnxTensor tensor;
        private boolean done;

        OrtValue(OnnxTensor tensor) {
            this.tensor = tensor;
        }

        @Override
        public String type() {
            return typeName(tensor.getInfo().type);
        }

        @Override
        public long[] shape() {
            return tensor.getInfo().getShape();
        }

        @Override
        public float[] readFloats() throws ArtifactException {
            OnnxJavaType t = tensor.getInfo().type;
            if (t == OnnxJavaType.FLOAT) {
                FloatBuffer b = tensor.getFloatBuffer();
                float[] out = new float[b.remaining()];
                b.get(out);
                return out;
            }
            if (t == OnnxJavaType.FLOAT16) {
                ShortBuffer b = tensor.getShortBuffer();
                float[] out = new float[b.remaining()];
                for (int i = 0; i < out.length; i++) {
                    out[i] = Half.toFloat(b.get(i));
                }
                return out;
            }
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: a " + type()
                    + " value read as floats");
        }

        /**
         * getFloatBuffer copies the tensor natively into a direct buffer (an output has no buffer reference
         * in onnxruntime's Java API, and getBufferRef's Optional is not in API 23's android.jar this compiles
         * against), then only the count elements become a Java float[].
         */
        @Override
        public float[] readFloats(long offset, int count) throws ArtifactException {
            long n = tensor.getInfo().getNumElements();
            if (offset < 0 || count < 0 || offset + count > n) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: elements " + offset
                        + ".." + (offset + count) + " of a tensor of " + n);
            }
            OnnxJavaType t = tensor.getInfo().type;
            float[] out = new float[count];
            if (t == OnnxJavaType.FLOAT) {
                FloatBuffer b = tensor.getFloatBuffer();
                b.position((int) offset);
                b.get(out);
                return out;
            }
            if (t == OnnxJavaType.FLOAT16) {
                ShortBuffer b = tensor.getShortBuffer();
                for (int i = 0; i < count; i++) {
                    out[i] = Half.toFloat(b.get((int) offset + i));
                }
                return out;
            }
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: a " + type()
                    + " value read as floats");
        }

        @Override
        public long[] readLongs() throws ArtifactException {
            if (tensor.getInfo().type != OnnxJavaType.INT64) {
                throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: a " + type()
                        + " value read as int64");
            }
            LongBuffer b = tensor.getLongBuffer();
            long[] out = new long[b.remaining()];
            b.get(out);
            return out;
        }

        @Override
        public void close() {
            synchronized (OrtEngine.this) {
                if (!done) {
                    done = true;
                    live.remove(this);
                    tensor.close();
                }
            }
        }
    }

    private final class OrtGraph implements Graph {
        private final String name;
        private final OrtSession session;
        private final Map<String, String> inputs = new LinkedHashMap<String, String>();
        private final List<String> outputs;
        private boolean done;

        OrtGraph(String name, OrtSession session) throws OrtException {
            this.name = name;
            this.session = session;
            for (Map.Entry<String, NodeInfo> e : session.getInputInfo().entrySet()) {
                Object info = e.getValue().getInfo();
                inputs.put(e.getKey(), info instanceof TensorInfo ? typeName(((TensorInfo) info).type) : String.valueOf(info));
            }
            outputs = Collections.unmodifiableList(new ArrayList<String>(session.getOutputInfo().keySet()));
        }

        @Override
        public Map<String, String> inputTypes() {
            return Collections.unmodifiableMap(inputs);
        }

        @Override
        public List<String> outputNames() {
            return outputs;
        }

        @Override
        public Map<String, Value> run(Map<String, Value> feeds, List<String> wanted) throws ArtifactException {
            Map<String, OnnxTensor> in = new LinkedHashMap<String, OnnxTensor>();
            for (Map.Entry<String, Value> e : feeds.entrySet()) {
                if (!(e.getValue() instanceof OrtValue)) {
                    throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime: input "
                            + e.getKey() + " of " + name + " was not made by this engine");
                }
                in.put(e.getKey(), ((OrtValue) e.getValue()).tensor);
            }
            OrtSession.Result result;
            try {
                result = session.run(in, new LinkedHashSet<String>(wanted));
            } catch (OrtException e) {
                throw failure(name + " failed", e);
            }
            // The result's values become ours one by one (result.close() would close them all).
            Map<String, Value> out = new LinkedHashMap<String, Value>();
            for (Map.Entry<String, OnnxValue> e : result) {
                if (!(e.getValue() instanceof OnnxTensor)) {
                    result.close();
                    for (Value v : out.values()) {
                        v.close();
                    }
                    throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, name + " output " + e.getKey()
                            + " is not a tensor");
                }
                out.put(e.getKey(), track((OnnxTensor) e.getValue()));
            }
            return out;
        }

        @Override
        public void close() {
            synchronized (OrtEngine.this) {
                if (done) {
                    return;
                }
                done = true;
                graphs.remove(this);
                try {
                    session.close();
                } catch (OrtException e) {
                    android.util.Log.w(MainActivity.TAG, "closing " + name + ": " + e.getMessage());
                }
            }
        }
    }
}
