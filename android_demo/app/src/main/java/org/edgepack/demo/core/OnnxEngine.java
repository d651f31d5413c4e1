package org.edgepack.demo.core;

import java.util.List;
import java.util.Map;

/**
 * Runs the graphs of a MiniCPM-V artifact's onnx/ folder (vision.onnx, embedding.onnx,
 * decoder_embeds.onnx) by file name. The app implements it with onnxruntime's Java API (one
 * session per graph, values as OnnxTensor); the desktop test with a bridge to onnxruntime in Python.
 *
 * Values are engine-owned: what a run returns can be fed to the next run as is (the KV cache's
 * present.N.key/value come back as past_key_values.N.key/value without a copy into Java), and only
 * {@link Value#readFloats()} / {@link Value#readLongs()} bring numbers into Java. Every value and
 * graph must be closed by whoever holds it (closing twice is harmless).
 */
public interface OnnxEngine {

    /** Element types the loop uses, as onnxruntime names them in a graph's inputs. */
    String FLOAT = "tensor(float)", FLOAT16 = "tensor(float16)", INT64 = "tensor(int64)";

    /** One tensor held by the engine. */
    interface Value {
        /** FLOAT, FLOAT16 or INT64. */
        String type();

        long[] shape();

        /** The elements as float32, row-major (float16 widened exactly). */
        float[] readFloats() throws ArtifactException;

        /**
         * count elements from element offset, as float32: the last position's logits of a prefill
         * piece without bringing the (piece × vocabulary) rest into Java (onnxruntime: a view of the
         * tensor's buffer, e.g. OnnxTensor.getBufferRef on a float tensor, then one bulk get).
         */
        float[] readFloats(long offset, int count) throws ArtifactException;

        /** The elements of an INT64 value, row-major. */
        long[] readLongs() throws ArtifactException;

        void close();
    }

    /** One loaded graph. */
    interface Graph {
        /** Input name -> element type (FLOAT, FLOAT16, INT64 or another onnxruntime type name), in graph order. */
        Map<String, String> inputTypes();

        /** Output names, in graph order. */
        List<String> outputNames();

        /**
         * Runs the graph on the named inputs and returns the named outputs (new values the caller
         * closes). The inputs stay open and owned by the caller.
         */
        Map<String, Value> run(Map<String, Value> inputs, List<String> outputs) throws ArtifactException;

        void close();
    }

    /** Loads fileName (e.g. "vision.onnx") from the artifact's onnx folder. */
    Graph open(String fileName) throws ArtifactException;

    /** A float32 tensor holding a copy of data (shape's product must equal data.length). */
    Value floats(float[] data, long[] shape) throws ArtifactException;

    /** A float16 tensor from the IEEE half bits in data (see {@link Half}). */
    Value float16(short[] data, long[] shape) throws ArtifactException;

    /** An int64 tensor holding a copy of data. */
    Value longs(long[] data, long[] shape) throws ArtifactException;

    /** Closes every graph still open; the engine cannot be used afterwards. */
    void close();
}
