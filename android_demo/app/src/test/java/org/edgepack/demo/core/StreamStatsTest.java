package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class StreamStatsTest {

    static final long S = 1000000000L;

    @Test
    void startsTheDecodeClockAtTheFirstToken() {
        StreamStats stats = new StreamStats(0);
        stats.onToken("One", S);            // first token after 1 s of prefill
        stats.onToken(" two", 3 * S / 2);
        stats.onToken(" three", 2 * S);
        stats.onText(" four five");
        assertEquals(3, stats.tokens());
        assertEquals(1.0, stats.ttftSeconds(), 1e-9);
        assertEquals(1.0, stats.decodeSeconds(), 1e-9);
        assertEquals(2.0, stats.tokensPerSecond(), 1e-9);
        assertEquals(5 / 2.5, stats.speechRatio(), 1e-9);
    }

    @Test
    void reportsZeroUntilTwoTokensArrived() {
        StreamStats stats = new StreamStats(0);
        assertEquals(0.0, stats.tokensPerSecond(), 0.0);
        stats.onToken("Hi", S);
        assertEquals(0.0, stats.tokensPerSecond(), 0.0);
        assertEquals(0.0, stats.speechRatio(), 0.0);
    }

    @Test
    void summarisesForTheScreen() {
        StreamStats stats = new StreamStats(0);
        stats.onToken("\u4f60", S / 2);
        stats.onToken("\u597d", S);
        String line = stats.summary();
        assertTrue(line.startsWith("2.0 tok/s \u00b7 0.8\u00d7 human speech (4.0 chars/s) \u00b7 TTFT 0.50 s"), line);
    }
}
