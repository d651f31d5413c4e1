package org.edgepack.demo.core;

import java.util.List;

/**
 * What the picture loop needs from a tokenizer (edgepack.model.tokenizer's Tokenizer, for the
 * artifact's tokenizer files). The app implements it over onnxruntime-genai's Tokenizer and
 * TokenizerStream; the desktop test over edgepack's own tokenizer in Python.
 */
public interface PromptTokenizer {

    /** One chat message. */
    final class Message {
        public final String role;
        public final String content;

        public Message(String role, String content) {
            this.role = role;
            this.content = content;
        }
    }

    /** The chat template rendered over messages, with the generation prompt (render_chat). */
    String renderChat(List<Message> messages) throws ArtifactException;

    /**
     * Token ids of text as edgepack's tokenizer.encode(text, add_bos=False): special tokens written in
     * the text (the template's "&lt;|im_start|&gt;", "&lt;s&gt;") are their own ids, and no BOS is added
     * (the loop adds it by {@link #addsBos()}).
     */
    int[] encode(String text) throws ArtifactException;

    /** The BOS id, or -1 when the tokenizer has none. */
    int bosId();

    /** Whether a prompt starts with BOS (tokenizer.add_bos: add_bos_token, default true for sentencepiece). */
    boolean addsBos();

    /**
     * The id of the one vocabulary piece spelled exactly text (a marker such as "&lt;image&gt;"), or -1
     * when there is none (genai's Tokenizer.toTokenId answers the unknown token's id instead: map that
     * to -1 unless text is the unknown token's own spelling).
     */
    int tokenId(String text);

    /**
     * The vocabulary piece of id. The loop only compares it with "\u2581" (sentencepiece's lone space,
     * dropped in front of a marker's text: vision.marker_ids) and uses the BOS id's piece to see whether
     * the rendered template already starts with BOS; an implementation without raw pieces may answer
     * "\u2581" for tokenId("\u2581") and the BOS token's text for bosId().
     */
    String piece(int id);

    /** The ids that end an answer. */
    int[] eosIds();

    /** A fresh incremental detokenizer for one answer. */
    Stream newStream();

    /** Token ids in, text out as soon as it is complete (UTF-8 sequences split across tokens held back). */
    interface Stream {
        String add(int id) throws ArtifactException;

        /** What is still held back once the answer ends (an unfinished UTF-8 sequence; often ""). */
        String finish() throws ArtifactException;
    }
}
