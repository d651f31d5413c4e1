package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import org.junit.jupiter.api.Test;

class PromptFormatTest {

    @Test
    void recognisesChatml() {
        String template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' "
                + "+ message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        PromptFormat f = PromptFormat.fromChatTemplate(template);
        assertSame(PromptFormat.CHATML, f);
        assertEquals("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", f.apply("Hi"));
    }

    @Test
    void recognisesMiniCpm() {
        PromptFormat f = PromptFormat.fromChatTemplate("{{'<\u7528\u6237>' + message['content'] + '<AI>'}}");
        assertSame(PromptFormat.MINICPM, f);
        assertEquals("<\u7528\u6237>\u4f60\u597d<AI>", f.apply("\u4f60\u597d"));
    }

    @Test
    void fallsBackToTheRawPrompt() {
        assertSame(PromptFormat.RAW, PromptFormat.fromChatTemplate(""));
        assertSame(PromptFormat.RAW, PromptFormat.fromChatTemplate(null));
        assertEquals("Hi", PromptFormat.RAW.apply("Hi"));
        assertEquals(0, PromptFormat.RAW.stopStrings.size());
    }
}
