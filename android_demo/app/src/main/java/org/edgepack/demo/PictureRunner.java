package org.edgepack.demo;

import java.io.File;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import ai.onnxruntime.genai.GenAIException;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.ImageSlicer;
import org.edgepack.demo.core.MultimodalChat;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.PromptFormat;
import org.edgepack.demo.core.RgbImage;
import org.edgepack.demo.core.StreamStats;
import org.edgepack.demo.core.TokenSampler;

/**
 * A MiniCPM-V artifact on the phone: core's MultimodalChat (the Python runtime's call order, proven
 * token for token on the desktop by tests/test_android_multimodal.py) over OrtEngine (onnxruntime's
 * Java API) and GenAiTokenizer (genai's Tokenizer on embedding.onnx). Every turn of such an artifact
 * runs here, with or without a picture; greedy, as GenAiRunner. One answer at a time, on the worker thread.
 */
final class PictureRunner implements AutoCloseable {

    private final OrtEngine engine;
    private final GenAiTokenizer tokenizer;
    private final MultimodalChat chat;
    private final PromptFormat format;

    /** Loads the three graphs and the tokenizer; on any failure what was loaded is closed again. */
    PictureRunner(PictureRoute route, int threads, String chatTemplate) throws ArtifactException, GenAIException {
        File onnx = route.vision.onnxDir;
        engine = new OrtEngine(onnx, threads);
        GenAiTokenizer tk = null;
        try {
            tk = new GenAiTokenizer(onnx, threads, route.vision.embeddingFile, chatTemplate);
            chat = new MultimodalChat(route.vision, engine, tk);
        } catch (ArtifactException | GenAIException | RuntimeException e) {
            if (tk != null) {
                tk.close();
            }
            engine.close();
            throw e;
        }
        tokenizer = tk;
        format = PromptFormat.fromChatTemplate(chatTemplate);
    }

    /** Stop strings of the recognised chat format (the loop already stops at the EOS ids). */
    List<String> stopStrings() {
        return format.stopStrings;
    }

    /** Slices the picture (core ImageSlicer) and runs vision.onnx once per slice. */
    MultimodalChat.Image encode(RgbImage picture, MultimodalChat.Listener progress) throws ArtifactException {
        return chat.encode(ImageSlicer.slice(picture, chat.vision), progress);
    }

    /**
     * Streams the answer to question (about image, or text only when image is null) to listener until
     * EOS, maxNewTokens, or stop is set (MultimodalChat.stop(): the answer ends after the current token,
     * the cache stays consistent). Returns the loop's figures (TTFT counted after the encode).
     */
    MultimodalChat.Result generate(String question, MultimodalChat.Image image, int maxNewTokens,
                                   final AtomicBoolean stop, final GenAiRunner.Listener listener)
            throws ArtifactException {
        return chat.ask(question, image, maxNewTokens, TokenSampler.greedy(chat.artifact.vocabSize),
                new MultimodalChat.Listener() {
                    @Override
                    public void onToken(int id, String text, StreamStats stats) {
                        listener.onPiece(text);
                        if (stop.get()) {
                            chat.stop();
                        }
                    }

                    @Override
                    public void onText(String text) {
                        listener.onPiece(text);
                    }
                });
    }

    /** The prompt's length in tokens (image rows included), as generate() feeds it. */
    int promptTokens(String question, MultimodalChat.Image image) throws ArtifactException {
        List<MultimodalChat.Image> images = image == null ? java.util.Collections.<MultimodalChat.Image>emptyList()
                : java.util.Collections.singletonList(image);
        String content = image == null ? question : MultimodalChat.userContent(question, 1);
        return chat.promptIds(java.util.Collections.singletonList(
                new org.edgepack.demo.core.PromptTokenizer.Message("user", content)), images).length;
    }

    /** Closes the cache, the sessions, every tensor and the tokenizer: the memory goes back for the next artifact. */
    @Override
    public void close() {
        chat.close();
        engine.close();
        tokenizer.close();
    }
}
