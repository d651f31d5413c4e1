package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;

class EngineSetupTest {

    @Test
    void threadsAreCappedAtTheBigCores() {
        assertEquals(1, EngineSetup.threads(0));
        assertEquals(2, EngineSetup.threads(2));
        assertEquals(4, EngineSetup.threads(8));
    }

    @Test
    void overlaySetsOnlyTheDecoderThreads() throws Exception {
        // The same JSON the desktop test overlays on genai 0.15.2 (tests/test_genai_phone_engine.py).
        assertEquals("{\"model\":{\"decoder\":{\"session_options\":{\"intra_op_num_threads\":3}}}}",
                EngineSetup.configOverlay(3));
    }

    @Test
    void userMessagesIsOneJsonTurnWithTheTextVerbatim() throws Exception {
        String text = "Say \"hi\"\n\u4f60\u597d \\ done";
        JSONArray messages = new JSONArray(EngineSetup.userMessages(text));
        assertEquals(1, messages.length());
        JSONObject m = messages.getJSONObject(0);
        assertEquals("user", m.getString("role"));
        assertEquals(text, m.getString("content"));
    }

    @Test
    void bosFollowsEdgepacksTokenizerRule() {
        assertTrue(EngineSetup.addsBos(null, true));
        assertFalse(EngineSetup.addsBos(null, false));
        assertTrue(EngineSetup.addsBos("{\"tokenizer_class\": \"LlamaTokenizer\"}", true));
        assertFalse(EngineSetup.addsBos("{\"add_bos_token\": false}", true));
        assertTrue(EngineSetup.addsBos("{\"add_bos_token\": true}", false));
        assertFalse(EngineSetup.addsBos("{\"bos_token\": \"<|im_start|>\"}", false));  // the demo model
        assertTrue(EngineSetup.addsBos("not json", true));
    }

    @Test
    void withBosPrependsOnce() {
        assertArrayEquals(new int[] {1, 5, 6}, EngineSetup.withBos(new int[] {5, 6}, 1, true));
        assertArrayEquals(new int[] {1, 5}, EngineSetup.withBos(new int[] {1, 5}, 1, true));
        assertArrayEquals(new int[] {1}, EngineSetup.withBos(new int[0], 1, true));
        assertArrayEquals(new int[] {5, 6}, EngineSetup.withBos(new int[] {5, 6}, 1, false));
        assertArrayEquals(new int[] {5, 6}, EngineSetup.withBos(new int[] {5, 6}, -1, true));
    }

    @Test
    void memoryCheckNamesBothFigures() {
        long mib = 1024L * 1024L;
        long needed = EngineSetup.memoryNeeded(1600 * mib);
        assertEquals((1600 + 400 + 256) * mib, needed);
        assertNull(EngineSetup.notEnoughMemory(needed, needed));
        String message = EngineSetup.notEnoughMemory(needed, 1000 * mib);
        assertTrue(message.startsWith("Not enough memory"), message);
        assertTrue(message.contains("2256 MiB") && message.contains("1000 MiB"), message);
    }

    @Test
    void loadFailureKeepsGenaisTextAndSpotsAllocationFailures() {
        String oom = EngineSetup.loadFailure("std::bad_alloc");
        assertTrue(oom.startsWith("Not enough memory") && oom.endsWith("onnxruntime-genai: std::bad_alloc"), oom);
        String other = EngineSetup.loadFailure(" Error: Unknown model type: llama5 ");
        assertTrue(other.startsWith("onnxruntime-genai could not load the model:"), other);
        assertTrue(other.contains("\n\nError: Unknown model type: llama5\n\n"), other);
        assertTrue(EngineSetup.loadFailure(null).contains("(no message)"));
    }
}
