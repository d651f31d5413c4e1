package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class SpeechMeterTest {

    static SpeechMeter meter(String... pieces) {
        SpeechMeter m = new SpeechMeter();
        for (String p : pieces) {
            m.add(p);
        }
        return m;
    }

    @Test
    void countsWordsNotTokens() {
        SpeechMeter m = meter("Hello, world! It's fine \u2014 don\u2019t worry: 2024.");
        assertEquals(7, m.words());
        assertEquals(0, m.cjkChars());
        assertFalse(m.cjkDominant());
    }

    @Test
    void countsAWordSplitAcrossPiecesOnce() {
        assertEquals(3, meter("Hel", "lo wor", "ld", " ", "again").words());
        assertEquals(2, meter("one", " ", "two").words());
    }

    @Test
    void countsCjkCharacters() {
        SpeechMeter m = meter("\u4f60\u597d", "\uff0c\u4e16\u754c\u3002");  // 你好，世界。
        assertEquals(4, m.cjkChars());
        assertEquals(0, m.words());
        assertTrue(m.cjkDominant());
        assertEquals("chars", m.unitName());
        // A character outside the BMP (CJK extension B) is one character.
        assertEquals(1, meter(new String(Character.toChars(0x20000))).cjkChars());
    }

    @Test
    void comparesWithTheHumanRateOfTheDominantScript() {
        assertEquals(2.0, meter("one two three four five").ratio(1.0), 1e-9);
        assertEquals(1.0, meter("\u4e00\u4e8c\u4e09\u56db\u4e94\u516d").ratio(6 / 5.2), 1e-9);
        // Mostly Chinese with an English name: Mandarin rate, counting the CJK characters.
        SpeechMeter mixed = meter("\u6211\u4eec\u7528 ONNX \u8fd0\u884c\u6a21\u578b");
        assertTrue(mixed.cjkDominant());
        assertEquals(7 / 2.0 / 5.2, mixed.ratio(2.0), 1e-9);
        // Mostly English with one Chinese word: English rate.
        assertFalse(meter("The word \u4f60\u597d means hello").cjkDominant());
    }

    @Test
    void reportsNothingBeforeTimeHasPassed() {
        assertEquals(0.0, meter("words words").ratio(0.0), 0.0);
        assertEquals(0.0, meter("").ratio(1.0), 0.0);
    }
}
