package org.edgepack.demo;

import java.io.File;
import java.util.concurrent.atomic.AtomicBoolean;

import ai.onnxruntime.genai.Config;
import ai.onnxruntime.genai.GenAI;
import ai.onnxruntime.genai.GenAIException;
import ai.onnxruntime.genai.Generator;
import ai.onnxruntime.genai.GeneratorParams;
import ai.onnxruntime.genai.Model;
import ai.onnxruntime.genai.Sequences;
import ai.onnxruntime.genai.Tokenizer;
import ai.onnxruntime.genai.TokenizerStream;

import org.edgepack.demo.core.ArtifactVerifier;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.PromptFormat;

/**
 * The onnxruntime-genai loop (0.15.2, packaged in the APK): one model and tokenizer, one answer at
 * a time, on a worker thread. The same calls as tests/test_genai_phone_engine.py makes on the
 * desktop with the same engine version: Config + overlay, Model, Tokenizer, applyChatTemplate with
 * the manifest's template, encode (+ BOS by edgepack's rule), Generator, TokenizerStream.
 */
final class GenAiRunner implements AutoCloseable {

    /** Receives each decoded piece as it is generated (on the worker thread). */
    interface Listener {
        void onPiece(String piece);
    }

    static final int MAX_NEW_TOKENS = 512;

    private final Model model;
    private final Tokenizer tokenizer;
    private final String chatTemplate;
    private final PromptFormat fallback;
    private final boolean addBos;
    private final int bosId;
    /** "chat template" when genai renders the manifest's template, else the fallback's name. */
    final String promptFormat;

    /**
     * Loads the onnx folder (model.onnx, genai_config.json, tokenizer files) with threads intra-op
     * threads. Throws UnsatisfiedLinkError when the native libraries cannot load on this phone.
     */
    GenAiRunner(File onnxFolder, int threads, String chatTemplate) throws GenAIException {
        GenAI.setTelemetry(false);  // loads the native libraries first; the app sends nothing anywhere
        Config config = new Config(onnxFolder.getAbsolutePath());
        try {
            config.overlay(EngineSetup.configOverlay(threads));
            model = new Model(config);
        } finally {
            config.close();
        }
        try {
            tokenizer = new Tokenizer(model);
        } catch (GenAIException e) {
            model.close();
            throw e;
        }
        this.chatTemplate = chatTemplate;
        addBos = EngineSetup.addsBos(readOrNull(new File(onnxFolder, "tokenizer_config.json")),
                new File(onnxFolder, "tokenizer.model").isFile());
        bosId = tokenizer.getBosTokenId();
        fallback = PromptFormat.fromChatTemplate(chatTemplate);
        promptFormat = renders(chatTemplate) ? "chat template" : fallback.name;
    }

    private static String readOrNull(File file) {
        try {
            return ArtifactVerifier.readUtf8(file);
        } catch (java.io.IOException e) {
            return null;
        }
    }

    /** Whether genai's template engine renders this template (probed once at load). */
    private boolean renders(String template) {
        if (template.isEmpty()) {
            return false;
        }
        try {
            return !tokenizer.applyChatTemplate(template, EngineSetup.userMessages("Hi"), null, true).isEmpty();
        } catch (GenAIException e) {
            return false;
        }
    }

    /** The prompt as the model was trained to see it; the template string must not be null (JNI). */
    String chatPrompt(String userText) throws GenAIException {
        if (promptFormat.equals("chat template")) {
            return tokenizer.applyChatTemplate(chatTemplate, EngineSetup.userMessages(userText), null, true);
        }
        return fallback.apply(userText);
    }

    /** Stop strings of the recognised chat format (genai already stops at the eos tokens). */
    java.util.List<String> stopStrings() {
        return fallback.stopStrings;
    }

    /** Streams the answer to userText until the model stops, MAX_NEW_TOKENS, or stop is set. */
    void generate(String userText, AtomicBoolean stop, Listener listener) throws GenAIException {
        generate(userText, MAX_NEW_TOKENS, stop, listener);
    }

    /** The prompt's token ids, as generate() feeds them (chat template, then BOS by edgepack's rule). */
    int[] promptIds(String userText) throws GenAIException {
        try (Sequences input = tokenizer.encode(chatPrompt(userText))) {
            return EngineSetup.withBos(input.getSequence(0), bosId, addBos);
        }
    }

    /** Streams the answer to userText until the model stops, maxNewTokens, or stop is set. */
    void generate(String userText, int maxNewTokens, AtomicBoolean stop, Listener listener) throws GenAIException {
        int[] ids = promptIds(userText);
        try (GeneratorParams params = new GeneratorParams(model)) {
            params.setSearchOption("max_length", ids.length + maxNewTokens);
            params.setSearchOption("do_sample", false);
            try (Generator generator = new Generator(model, params);
                 TokenizerStream stream = tokenizer.createStream()) {
                generator.appendTokens(ids);
                while (!generator.isDone() && !stop.get()) {
                    generator.generateNextToken();
                    listener.onPiece(stream.decode(generator.getLastTokenInSequence(0)));
                }
            }
        }
    }

    @Override
    public void close() {
        tokenizer.close();
        model.close();
    }
}
