package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * MiniCPM-V's decoder on inputs_embeds with its KV cache, as edgepack/runtime/onnx_backend.py runs
 * it: text ids through embedding.onnx, image rows as given, each forward cut into pieces of
 * {@link #PIECE} rows (backend.chunks), one decoder_embeds.onnx run per piece with attention_mask
 * ones over past + new and the past_key_values of the previous run. The presents a run returns
 * stay engine values and are the next run's pasts (closed once replaced), so no step copies the
 * cache into Java. The first pasts are empty (1, kv_heads, 0, head_size) tensors of the element
 * type the graph declares (float16 in edgepack's int4 exports).
 */
public final class EmbedsDecoder {

    /** Rows per decoder run in a long prefill (edgepack.runtime.backend.PIECE). */
    public static final int PIECE = 128;

    private final OnnxEngine engine;
    private final OnnxEngine.Graph decoder, embedding;
    private final VisionArtifact a;
    private final String kvType;
    private final List<String> pastNames = new ArrayList<String>(), presentNames = new ArrayList<String>();
    private final List<String> outputs = new ArrayList<String>();
    private final Map<String, OnnxEngine.Value> past = new LinkedHashMap<String, OnnxEngine.Value>();
    private int nPast;

    public EmbedsDecoder(OnnxEngine engine, OnnxEngine.Graph decoder, OnnxEngine.Graph embedding, VisionArtifact a)
            throws ArtifactException {
        this.engine = engine;
        this.decoder = decoder;
        this.embedding = embedding;
        this.a = a;
        MultimodalChat.requireInputs(a.decoderFile, decoder, "inputs_embeds", "attention_mask");
        MultimodalChat.requireInputs(a.embeddingFile, embedding, "input_ids");
        outputs.add("logits");
        for (int i = 0; i < a.layers; i++) {
            pastNames.add(String.format(java.util.Locale.ROOT, a.pastKey, i));
            pastNames.add(String.format(java.util.Locale.ROOT, a.pastValue, i));
            presentNames.add(String.format(java.util.Locale.ROOT, a.presentKey, i));
            presentNames.add(String.format(java.util.Locale.ROOT, a.presentValue, i));
        }
        MultimodalChat.requireInputs(a.decoderFile, decoder, pastNames.toArray(new String[0]));
        outputs.addAll(presentNames);
        if (!decoder.outputNames().containsAll(outputs)) {
            List<String> missing = new ArrayList<String>(outputs);
            missing.removeAll(decoder.outputNames());
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, a.decoderFile + " has no output "
                    + missing.get(0) + ": it is not the decoder this app runs (export it again with edgepack).");
        }
        kvType = decoder.inputTypes().get(pastNames.get(0));
        if (!OnnxEngine.FLOAT.equals(kvType) && !OnnxEngine.FLOAT16.equals(kvType)) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, a.decoderFile + ": KV cache type "
                    + kvType + " is not supported (" + OnnxEngine.FLOAT + ", " + OnnxEngine.FLOAT16 + ")");
        }
    }

    /** Tokens the cache holds. */
    public int nPast() {
        return nPast;
    }

    /** FLOAT or FLOAT16: what the cache holds. */
    public String kvType() {
        return kvType;
    }

    /** Empties the cache. */
    public void reset() {
        for (OnnxEngine.Value v : past.values()) {
            v.close();
        }
        past.clear();
        nPast = 0;
    }

    /** Appends text tokens; returns the last position's logits. */
    public float[] forwardIds(int[] ids) throws ArtifactException {
        float[] last = null;
        for (int lo = 0; lo < ids.length; lo += PIECE) {
            int n = Math.min(PIECE, ids.length - lo);
            long[] piece = new long[n];
            for (int i = 0; i < n; i++) {
                piece[i] = ids[lo + i];
            }
            OnnxEngine.Value in = engine.longs(piece, new long[] {1, n});
            Map<String, OnnxEngine.Value> feed = new LinkedHashMap<String, OnnxEngine.Value>();
            feed.put("input_ids", in);
            Map<String, OnnxEngine.Value> out;
            try {
                out = embedding.run(feed, Collections.singletonList("inputs_embeds"));
            } finally {
                in.close();
            }
            OnnxEngine.Value x = out.get("inputs_embeds");
            try {
                last = run(x, n);
            } finally {
                x.close();
            }
        }
        return last;
    }

    /** Appends T input rows (T × hidden, row-major; image embeddings); returns the last position's logits. */
    public float[] forwardRows(float[] rows, int T) throws ArtifactException {
        int d = rows.length / T;
        float[] last = null;
        for (int lo = 0; lo < T; lo += PIECE) {
            int n = Math.min(PIECE, T - lo);
            OnnxEngine.Value x = engine.floats(Arrays.copyOfRange(rows, lo * d, (lo + n) * d), new long[] {1, n, d});
            try {
                last = run(x, n);
            } finally {
                x.close();
            }
        }
        return last;
    }

    private float[] run(OnnxEngine.Value embeds, int n) throws ArtifactException {
        int total = nPast + n;
        if (total > a.contextLength) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "context full: " + nPast + " + " + n
                    + " tokens exceed the model's " + a.contextLength);
        }
        long[] ones = new long[total];
        Arrays.fill(ones, 1L);
        OnnxEngine.Value mask = engine.longs(ones, new long[] {1, total});
        Map<String, OnnxEngine.Value> feed = new LinkedHashMap<String, OnnxEngine.Value>();
        feed.put("inputs_embeds", embeds);
        feed.put("attention_mask", mask);
        List<OnnxEngine.Value> made = new ArrayList<OnnxEngine.Value>();
        made.add(mask);
        for (String name : pastNames) {
            OnnxEngine.Value v = past.get(name);
            if (v == null) {
                long[] shape = {1, a.kvHeads, 0, a.headSize};
                v = OnnxEngine.FLOAT16.equals(kvType) ? engine.float16(new short[0], shape) : engine.floats(new float[0], shape);
                made.add(v);
            }
            feed.put(name, v);
        }
        Map<String, OnnxEngine.Value> out;
        try {
            out = decoder.run(feed, outputs);
        } finally {
            for (OnnxEngine.Value v : made) {
                v.close();
            }
        }
        for (int i = 0; i < pastNames.size(); i++) {
            OnnxEngine.Value old = past.put(pastNames.get(i), out.get(presentNames.get(i)));
            if (old != null) {
                old.close();
            }
        }
        nPast = total;
        OnnxEngine.Value logits = out.get("logits");
        try {
            long[] shape = logits.shape();
            int v = (int) shape[shape.length - 1];
            return logits.readFloats((long) (n - 1) * v, v);
        } finally {
            logits.close();
        }
    }

    public void close() {
        reset();
    }
}
