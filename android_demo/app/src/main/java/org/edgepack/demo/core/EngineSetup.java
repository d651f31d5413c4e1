package org.edgepack.demo.core;

import java.util.Locale;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * What the app hands onnxruntime-genai besides the artifact, and how it words engine failures.
 * Pure logic (no android.*, no genai classes), so it is tested on the JVM; the desktop test
 * (tests/test_genai_phone_engine.py) feeds genai 0.15.2 the same overlay and messages.
 */
public final class EngineSetup {

    /** The engine fetch_engine.sh packs (tests/test_android.py finds the same versions in the APK's libraries). */
    public static final String GENAI_VERSION = "0.15.2";
    public static final String ONNXRUNTIME_VERSION = "1.29.0";

    /** Decode on at most this many threads: phones have 2-4 big cores; the rest are slow ones. */
    public static final int MAX_THREADS = 4;
    private static final long MIB = 1024L * 1024L;
    /** Room for the KV cache, activations and the engine itself, beyond the weights. */
    private static final long OVERHEAD_BYTES = 256 * MIB;

    private EngineSetup() {
    }

    /** Threads for onnxruntime: the artifact's genai_config.json has the exporting machine's count. */
    public static int threads(int processors) {
        return Math.max(1, Math.min(MAX_THREADS, processors));
    }

    /** A genai Config.overlay() that sets only the decoder session's intra-op thread count. */
    public static String configOverlay(int threads) {
        try {
            JSONObject options = new JSONObject().put("intra_op_num_threads", threads);
            JSONObject decoder = new JSONObject().put("session_options", options);
            return new JSONObject().put("model", new JSONObject().put("decoder", decoder)).toString();
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    /** One user turn, as Tokenizer.applyChatTemplate() wants its messages argument. */
    public static String userMessages(String text) {
        try {
            JSONObject message = new JSONObject().put("role", "user").put("content", text);
            return new JSONArray().put(message).toString();
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Whether edgepack's runtime starts a prompt with BOS for this onnx folder: tokenizer_config.json's
     * add_bos_token, by default true for a sentencepiece model (the folder has tokenizer.model) and
     * false for a tokenizer.json one (edgepack.tokenizer.load_tokenizer's rule). genai 0.15.2's
     * Tokenizer.encode never adds it, so the app does (tests/test_genai_phone_engine.py).
     */
    public static boolean addsBos(String tokenizerConfigJson, boolean sentencepiece) {
        if (tokenizerConfigJson == null) {
            return sentencepiece;
        }
        try {
            JSONObject config = new JSONObject(tokenizerConfigJson);
            return config.has("add_bos_token") ? config.optBoolean("add_bos_token", sentencepiece) : sentencepiece;
        } catch (JSONException e) {
            return sentencepiece;
        }
    }

    /** ids with bosId in front when addBos and they do not start with it already. */
    public static int[] withBos(int[] ids, int bosId, boolean addBos) {
        if (!addBos || bosId < 0 || (ids.length > 0 && ids[0] == bosId)) {
            return ids;
        }
        int[] out = new int[ids.length + 1];
        out[0] = bosId;
        System.arraycopy(ids, 0, out, 1, ids.length);
        return out;
    }

    /** Bytes the model needs in RAM, estimated from the size of the onnx files. */
    public static long memoryNeeded(long onnxBytes) {
        return onnxBytes + onnxBytes / 4 + OVERHEAD_BYTES;
    }

    /** The message for a phone with too little free memory, or null when the model should fit. */
    public static String notEnoughMemory(long needed, long available) {
        if (available >= needed) {
            return null;
        }
        return String.format(Locale.ROOT, "Not enough memory: this model needs about %d MiB, and the "
                + "phone has %d MiB available. Close other apps and reopen, or export a smaller model.",
                needed / MIB, available / MIB);
    }

    /** The message for an exception from Model/Tokenizer creation, with genai's own text. */
    public static String loadFailure(String genaiMessage) {
        String text = genaiMessage == null ? "(no message)" : genaiMessage.trim();
        String lower = text.toLowerCase(Locale.ROOT);
        if (lower.contains("bad_alloc") || lower.contains("failed to allocate") || lower.contains("out of memory")) {
            return "Not enough memory to load the model. Close other apps and reopen, or export a smaller "
                    + "model.\n\nonnxruntime-genai: " + text;
        }
        return "onnxruntime-genai could not load the model:\n\n" + text
                + "\n\nThe files match edgepack.json, so the artifact is as exported: export it again with "
                + "this app's edgepack version, or report the message above.";
    }
}
