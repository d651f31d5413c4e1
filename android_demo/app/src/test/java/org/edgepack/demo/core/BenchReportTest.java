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
}
