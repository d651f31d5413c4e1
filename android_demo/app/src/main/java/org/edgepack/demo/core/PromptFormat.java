package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * Wraps the user's prompt the way the model was trained to see it. The manifest carries the
 * tokenizer's Jinja chat template; rather than run Jinja on the phone, the app recognises the
 * two templates edgepack's models use and falls back to the raw prompt.
 */
public final class PromptFormat {

    public final String name;
    private final String before;
    private final String after;
    public final List<String> stopStrings;

    private PromptFormat(String name, String before, String after, String... stopStrings) {
        this.name = name;
        this.before = before;
        this.after = after;
        this.stopStrings = Collections.unmodifiableList(new ArrayList<String>(Arrays.asList(stopStrings)));
    }

    public static final PromptFormat CHATML = new PromptFormat("ChatML",
            "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", "<|im_start|>");
    public static final PromptFormat MINICPM = new PromptFormat("MiniCPM",
            "<\u7528\u6237>", "<AI>", "<\u7528\u6237>");
    public static final PromptFormat RAW = new PromptFormat("raw", "", "");

    public static PromptFormat fromChatTemplate(String template) {
        if (template == null) {
            return RAW;
        }
        if (template.contains("<|im_start|>")) {
            return CHATML;
        }
        if (template.contains("<\u7528\u6237>")) {  // <用户>
            return MINICPM;
        }
        return RAW;
    }

    public String apply(String userText) {
        return before + userText + after;
    }
}
