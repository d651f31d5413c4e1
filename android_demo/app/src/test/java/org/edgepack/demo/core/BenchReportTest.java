package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;

import org.json.JSONObject;
import org.junit.jupiter.api.Test;

class BenchReportTest {

    static final long S = 1000000000L;

    private static JSONObject device() throws Exception {
        return new JSONObject().put("model", "Pixel 8").put("abi", "arm64-v8a").put("sdk", 34).put("cores", 9);
    }

    private static JSONObject engine() throws Exception {
        return new JSONObject().put("onnxruntime_genai", "0.15.2").put("onnxruntime", "1.29.0");
    }

    @Test
    void writesTheFiguresOfARunAndPullsBackAsJson() throws Exception {
        BenchRequest request = BenchRequest.fromExtras("demo-int4-1", 64, null);
        StreamStats stats = new StreamStats(0);  // prefill 0.5 s, then 4 tokens in 1.5 s
        stats.onToken("Once", S / 2);
        stats.onToken(" upon", S);
        stats.onToken(" a", 3 * S / 2);
        stats.onToken(" time", 2 * S);
        ProcStatus memory = ProcStatus.parse("VmHWM:\t 1000 kB\nVmRSS:\t 800 kB\n");
        JSONObject report = BenchReport.success(request, 37, stats, "Once upon a time", memory, 2.25, 4,
                "demo-int4", "SmolLM2-135M", device(), engine());
        Path dir = Files.createTempDirectory("bench");
        File out = request.output(dir.toFile());
        BenchReport.write(report, out);

        assertEquals(new File(new File(dir.toFile(), "bench"), "demo-int4-1.json"), out);
        assertFalse(new File(out.getPath() + ".tmp").exists());
        JSONObject back = new JSONObject(new String(Files.readAllBytes(out.toPath()), "UTF-8"));
        for (String key : BenchReport.KEYS) {
            assertTrue(back.has(key), key);
        }
        assertEquals(BenchReport.SCHEMA, back.getInt("schema"));
        assertEquals("demo-int4-1", back.getString("run"));
        assertEquals(BenchRequest.PROMPT, back.getString("prompt"));
        assertEquals(37, back.getInt("prompt_tokens"));
        assertEquals(64, back.getInt("max_new_tokens"));
        assertEquals(4, back.getInt("tokens"));
        assertEquals(0.5, back.getDouble("ttft_s"), 1e-9);
        assertEquals(2.0, back.getDouble("decode_tok_s"), 1e-9);  // 3 tokens after the first, in 1.5 s
        assertEquals(1.5, back.getDouble("decode_s"), 1e-9);
        assertEquals(4 / 1.5 / 2.5, back.getDouble("speech_ratio"), 1e-4);
        assertEquals("words", back.getString("speech_unit"));
        assertEquals(1000L * 1024, back.getLong("peak_rss_bytes"));
        assertEquals(800L * 1024, back.getLong("rss_bytes"));
        assertEquals(2.25, back.getDouble("load_s"), 1e-9);
        assertEquals("arm64-v8a", back.getJSONObject("device").getString("abi"));
        assertEquals("1.29.0", back.getJSONObject("engine").getString("onnxruntime"));
        assertTrue(back.isNull("error"));
    }

    @Test
    void aFailedRunStillWritesTheFileWithTheError() throws Exception {
        BenchRequest request = BenchRequest.fromExtras("r2", 0, null);
        JSONObject report = BenchReport.failure(request, "No artifact found in /sdcard/x.", "", device(), engine());
        File out = request.output(Files.createTempDirectory("bench").toFile());
        BenchReport.write(report, out);
        JSONObject back = new JSONObject(new String(Files.readAllBytes(out.toPath()), "UTF-8"));
        for (String key : BenchReport.KEYS) {
            assertTrue(back.has(key), key);
        }
        assertEquals("No artifact found in /sdcard/x.", back.getString("error"));
        assertTrue(back.isNull("decode_tok_s") && back.isNull("ttft_s") && back.isNull("peak_rss_bytes"));
        assertEquals(BenchRequest.DEFAULT_TOKENS, back.getInt("max_new_tokens"));
    }

    @Test
    void aPictureRunAddsTheEncodeAndTheTtftAfterIt() throws Exception {
        BenchRequest request = BenchRequest.fromExtras("v4-1", 32, "minicpmv4-int4", "v4-1.jpg");
        assertEquals(BenchRequest.IMAGE_PROMPT, request.prompt);
        StreamStats stats = new StreamStats(0);  // encode 1.5 s, prefill 0.25 s, then 3 tokens in 1 s
        stats.onToken("A", 7 * S / 4);
        stats.onToken(" red", 9 * S / 4);
        stats.onToken(" square", 11 * S / 4);
        JSONObject report = BenchReport.withImage(BenchReport.success(request, 180, stats, "A red square",
                ProcStatus.parse("VmHWM:\t 2000 kB\nVmRSS:\t 900 kB\n"), 3.0, 4, "minicpmv4-int4", "MiniCPM-V 4.0",
                device(), engine()), request, new double[] {400, 300, 350, 450}, 0.25);
        File out = request.output(Files.createTempDirectory("bench").toFile());
        BenchReport.write(report, out);
        JSONObject back = new JSONObject(new String(Files.readAllBytes(out.toPath()), "UTF-8"));
        for (String key : BenchReport.KEYS) {
            assertTrue(back.has(key), key);
        }
        assertEquals("v4-1.jpg", back.getString("image"));
        assertEquals(BenchRequest.IMAGE_PROMPT, back.getString("prompt"));
        assertEquals(4, back.getInt("slices"));
        assertEquals(1500.0, back.getDouble("encode_ms"), 1e-9);
        assertEquals(375.0, back.getDouble("encode_ms_per_slice"), 1e-9);
        assertEquals(0.25, back.getDouble("ttft_after_encode_s"), 1e-9);
        assertEquals(1.75, back.getDouble("ttft_s"), 1e-9);  // the whole wait, encode included
        assertEquals(2.0, back.getDouble("decode_tok_s"), 1e-9);
    }

    @Test
    void aTextRunHasNoEncodeFiguresAndAFailedPictureRunNamesItsPicture() throws Exception {
        JSONObject text = BenchReport.success(BenchRequest.fromExtras("t", 8, null), 5, new StreamStats(0), "",
                ProcStatus.parse(""), 1.0, 2, "a", "m", device(), engine());
        for (String key : new String[] {"image", "slices", "encode_ms", "encode_ms_per_slice", "ttft_after_encode_s"}) {
            assertTrue(text.isNull(key), key);
        }
        JSONObject failed = BenchReport.failure(BenchRequest.fromExtras("p", 8, "a", "p.png"),
                "p.png is not a picture the phone can decode.", "a", device(), engine());
        assertEquals("p.png", failed.getString("image"));
        assertTrue(failed.isNull("slices"));
    }

    @Test
    void anImageReportNeedsAPictureRunAndASlice() throws Exception {
        final BenchRequest text = BenchRequest.fromExtras("t", 8, null);
        final BenchRequest picture = BenchRequest.fromExtras("p", 8, null, "p.jpg");
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, new org.junit.jupiter.api.function.Executable() {
            @Override
            public void execute() {
                BenchReport.withImage(new JSONObject(), text, new double[] {1}, 0);
            }
        });
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, new org.junit.jupiter.api.function.Executable() {
            @Override
            public void execute() {
                BenchReport.withImage(new JSONObject(), picture, new double[0], 0);
            }
        });
    }
}
