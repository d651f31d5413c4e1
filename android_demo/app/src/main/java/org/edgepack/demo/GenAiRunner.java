package org.edgepack.demo;

import java.io.File;
import java.util.concurrent.atomic.AtomicBoolean;

import ai.onnxruntime.genai.GenAIException;
import ai.onnxruntime.genai.Generator;
import ai.onnxruntime.genai.GeneratorParams;
import ai.onnxruntime.genai.Model;
import ai.onnxruntime.genai.Sequences;
import ai.onnxruntime.genai.Tokenizer;
import ai.onnxruntime.genai.TokenizerStream;

/** The onnxruntime-genai loop: one model and tokenizer, one answer at a time, on a worker thread. */
final class GenAiRunner implements AutoCloseable {

    /** Receives each decoded piece as it is generated (on the worker thread). */
    interface Listener {
        void onPiece(String piece);
    }

    static final int MAX_NEW_TOKENS = 512;

    private final Model model;
    private final Tokenizer tokenizer;

    /** Loads the onnx folder (model.onnx, genai_config.json, tokenizer files). */
    GenAiRunner(File onnxFolder) throws GenAIException {
        model = new Model(onnxFolder.getAbsolutePath());
        Tokenizer t;
        try {
            t = new Tokenizer(model);
        } catch (GenAIException e) {
            model.close();
            throw e;
        }
        tokenizer = t;
    }

    /** Streams the answer to prompt until the model stops, MAX_NEW_TOKENS, or stop is set. */
    void generate(String prompt, AtomicBoolean stop, Listener listener) throws GenAIException {
        try (Sequences input = tokenizer.encode(prompt);
             GeneratorParams params = new GeneratorParams(model)) {
            params.setSearchOption("max_length", input.getSequence(0).length + MAX_NEW_TOKENS);
            try (Generator generator = new Generator(model, params);
                 TokenizerStream stream = tokenizer.createStream()) {
                generator.appendTokenSequences(input);
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
