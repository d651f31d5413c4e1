package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;

import org.junit.jupiter.api.Test;

class BenchRequestTest {

    @Test
    void noRunIdMeansNoBenchmark() {
        assertNull(BenchRequest.fromExtras(null, 64, null));
    }

    @Test
    void acceptsTheIntentEdgepackSends() {
        // edgepack android bench: --es org.edgepack.demo.BENCH demo-int4-20261204T190000
        //     --ei org.edgepack.demo.BENCH_TOKENS 128 --es org.edgepack.demo.BENCH_ARTIFACT demo-int4
        BenchRequest r = BenchRequest.fromExtras("demo-int4-20261204T190000", 128, "demo-int4");
        assertEquals("demo-int4", r.artifact);
        assertEquals("demo-int4-20261204T190000", r.runId);
        assertEquals(128, r.maxNewTokens);
        assertEquals(BenchRequest.PROMPT, r.prompt);
        assertEquals(new File("/files/bench/demo-int4-20261204T190000.json"), r.output(new File("/files")));
        assertEquals(BenchRequest.DEFAULT_TOKENS, BenchRequest.fromExtras("run1", 0, null).maxNewTokens);
        assertNull(BenchRequest.fromExtras("run1", 0, null).artifact);
    }

    @Test
    void refusesRunIdsThatAreNotPlainFileNames() {
        for (String bad : new String[] {"", "../x", "a/b", ".hidden", "-x", "a b", "x.tmp"}) {
            assertTrue(refusal(bad, 16, null).contains("run id"), bad);
        }
    }

    @Test
    void refusesArtifactsOutsideTheFilesDirectory() {
        assertTrue(refusal("r", 16, "../../data").contains("artifact"));
        assertTrue(refusal("r", 16, "a/b").contains("artifact"));
    }

    @Test
    void aPictureRunNamesAFileBesideTheArtifact() {
        BenchRequest r = BenchRequest.fromExtras("v-1", 64, "minicpmv4", "v-1.jpg");
        assertEquals("v-1.jpg", r.image);
        assertEquals(BenchRequest.IMAGE_PROMPT, r.prompt);
        assertEquals(new File("/files/v-1.jpg"), r.imageFile(new File("/files")));
        assertNull(BenchRequest.fromExtras("v-1", 64, "minicpmv4").imageFile(new File("/files")));
        for (String bad : new String[] {"../x.jpg", "a/b.jpg", ".x", "a b.jpg", "x.tmp"}) {
            try {
                BenchRequest.fromExtras("r", 16, null, bad);
                fail("accepted image " + bad);
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage().contains("image"), bad);
            }
        }
    }

    @Test
    void refusesTokenCountsOutOfRange() {
        assertTrue(refusal("r", -1, null).contains("tokens"));
        assertTrue(refusal("r", BenchRequest.MAX_TOKENS + 1, null).contains("tokens"));
        assertEquals(BenchRequest.MAX_TOKENS, BenchRequest.fromExtras("r", BenchRequest.MAX_TOKENS, null).maxNewTokens);
    }

    /** The message fromExtras refuses with (the test fails if it accepts). */
    private static String refusal(String runId, int tokens, String artifact) {
        try {
            BenchRequest.fromExtras(runId, tokens, artifact);
        } catch (IllegalArgumentException e) {
            return e.getMessage();
        }
        fail("accepted " + runId + " / " + tokens);
        return null;
    }
}
