package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Collections;

import org.junit.jupiter.api.Test;

class StreamAssemblerTest {

    static StreamAssembler chatml() {
        return new StreamAssembler(PromptFormat.CHATML.stopStrings);
    }

    @Test
    void passesTextThroughWithoutStopStrings() {
        StreamAssembler a = new StreamAssembler(Collections.<String>emptyList());
        assertEquals("Hel", a.add("Hel"));
        assertEquals("lo <|", a.add("lo <|"));
        assertEquals("", a.finish());
        assertEquals("Hello <|", a.text());
    }

    @Test
    void holdsBackThePossibleStartOfAStopString() {
        StreamAssembler a = chatml();
        assertEquals("Hi ", a.add("Hi <|im"));
        assertEquals("", a.add("_en"));
        assertEquals("", a.add("d|>\nmore"));
        assertTrue(a.stopped());
        assertEquals("", a.add("ignored"));
        assertEquals("", a.finish());
        assertEquals("Hi ", a.text());
    }

    @Test
    void releasesHeldTextThatIsNotAStopString() {
        StreamAssembler a = chatml();
        assertEquals("a ", a.add("a <|i"));
        assertEquals("<|is fine", a.add("s fine"));
        assertEquals("x", a.add("x<"));
        assertEquals("<", a.finish());
        assertFalse(a.stopped());
        assertEquals("a <|is finex<", a.text());
    }

    @Test
    void stopsAtTheEarliestStopStringInOnePiece() {
        StreamAssembler a = new StreamAssembler(Arrays.asList("END", "<|im_end|>"));
        assertEquals("done.", a.add("done.<|im_end|>END"));
        assertTrue(a.stopped());
        assertEquals("done.", a.text());
    }

    @Test
    void keepsChineseTextWhole() {
        StreamAssembler a = new StreamAssembler(PromptFormat.MINICPM.stopStrings);
        assertEquals("\u4f60\u597d", a.add("\u4f60\u597d"));
        assertEquals("", a.add("<"));
        assertEquals("", a.add("\u7528"));
        assertEquals("", a.add("\u6237>"));
        assertTrue(a.stopped());
        assertEquals("\u4f60\u597d", a.text());
    }
}
