package org.edgepack.demo.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * The JSON a benchmark run leaves for `edgepack android bench` to pull: the answer's figures from the
 * app's own clock (StreamStats: TTFT, decode tokens/s from the first token on, the speech ratio) and
 * the process's memory from /proc/self/status. Written to a temporary file and renamed, so a reader
 * polling for the file never sees half of it. A run that fails writes the same file with "error" set.
 * A run about a picture (BenchRequest.image) adds the encode: slices, encode ms (total and per slice) and
 * the TTFT counted from the end of the encode; those keys are null in a text run.
 */
public final class BenchReport {

    public static final int SCHEMA = 1;
    /** Every report has these keys (edgepack.android.BENCH_KEYS checks the same list). */
    public static final String[] KEYS = {"schema", "run", "prompt", "prompt_tokens", "max_new_tokens", "tokens",
        "ttft_s", "decode_tok_s", "decode_s", "speech_ratio", "speech_units_per_s", "speech_unit", "peak_rss_bytes",
        "rss_bytes", "load_s", "threads", "artifact", "model", "device", "engine", "text", "error",
        "image", "slices", "encode_ms", "encode_ms_per_slice", "ttft_after_encode_s"};

    private BenchReport() {
    }

    /** A finished run. device and engine: small objects describing the phone and the engine versions. */
    public static JSONObject success(BenchRequest request, int promptTokens, StreamStats stats, String text,
                                     ProcStatus memory, double loadSeconds, int threads, String artifact,
                                     String model, JSONObject device, JSONObject engine) {
        JSONObject o = base(request, artifact, model, device, engine);
        try {
            double seconds = stats.decodeSeconds();
            o.put("prompt_tokens", promptTokens).put("tokens", stats.tokens())
                    .put("ttft_s", round(stats.ttftSeconds())).put("decode_tok_s", round(stats.tokensPerSecond()))
                    .put("decode_s", round(seconds)).put("speech_ratio", round(stats.speechRatio()))
                    .put("speech_units_per_s", round(stats.meter().unitsPerSecond(seconds)))
                    .put("speech_unit", stats.meter().unitName())
                    .put("peak_rss_bytes", memory.peakRssBytes).put("rss_bytes", memory.rssBytes)
                    .put("load_s", round(loadSeconds)).put("threads", threads).put("text", text);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return o;
    }

    /** A run that could not finish: the figures are null and error says why (the message shown on screen). */
    public static JSONObject failure(BenchRequest request, String error, String artifact, JSONObject device,
                                     JSONObject engine) {
        JSONObject o = base(request, artifact, "", device, engine);
        try {
            o.put("error", error == null ? "(no message)" : error);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return o;
    }

    /**
     * A finished picture run: success()'s report plus the encode of request.image. encodeMs: vision.onnx's
     * time for each slice (overview first); ttftAfterEncodeSeconds: from the end of the encode to the first
     * token (the prefill of text and image rows). The report's ttft_s stays the whole wait, encode included.
     */
    public static JSONObject withImage(JSONObject report, BenchRequest request, double[] encodeMs,
                                       double ttftAfterEncodeSeconds) {
        if (request.image == null || encodeMs.length == 0) {
            throw new IllegalArgumentException("an image report needs the request's image and at least one slice");
        }
        double total = 0;
        for (double ms : encodeMs) {
            total += ms;
        }
        try {
            report.put("image", request.image).put("slices", encodeMs.length).put("encode_ms", round(total))
                    .put("encode_ms_per_slice", round(total / encodeMs.length))
                    .put("ttft_after_encode_s", round(ttftAfterEncodeSeconds));
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return report;
    }

    private static JSONObject base(BenchRequest request, String artifact, String model, JSONObject device,
                                   JSONObject engine) {
        JSONObject o = new JSONObject();
        try {
            for (String key : KEYS) {
                o.put(key, JSONObject.NULL);
            }
            o.put("schema", SCHEMA).put("run", request.runId).put("prompt", request.prompt)
                    .put("max_new_tokens", request.maxNewTokens).put("artifact", artifact == null ? "" : artifact)
                    .put("model", model == null ? "" : model)
                    .put("image", request.image == null ? JSONObject.NULL : request.image)
                    .put("device", device == null ? new JSONObject() : device)
                    .put("engine", engine == null ? new JSONObject() : engine);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return o;
    }

    private static double round(double x) {
        return Math.round(x * 10000.0) / 10000.0;
    }

    /** Writes report to out (creating its folder) through out.tmp and a rename. */
    public static void write(JSONObject report, File out) throws IOException {
        File dir = out.getParentFile();
        if (dir != null && !dir.isDirectory() && !dir.mkdirs()) {
            throw new IOException("cannot create " + dir);
        }
        File tmp = new File(out.getPath() + ".tmp");
        FileOutputStream stream = new FileOutputStream(tmp);
        try {
            stream.write((toText(report) + "\n").getBytes("UTF-8"));
            stream.getFD().sync();
        } finally {
            stream.close();
        }
        if (!tmp.renameTo(out)) {
            throw new IOException("cannot rename " + tmp + " to " + out);
        }
    }

    static String toText(JSONObject report) {
        try {
            return report.toString(2);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }
}
