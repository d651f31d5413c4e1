package org.edgepack.demo;

import java.io.File;
import java.util.List;

import ai.onnxruntime.genai.Config;
import ai.onnxruntime.genai.GenAI;
import ai.onnxruntime.genai.GenAIException;
import ai.onnxruntime.genai.Model;
import ai.onnxruntime.genai.Sequences;
import ai.onnxruntime.genai.Tokenizer;
import ai.onnxruntime.genai.TokenizerStream;

import org.edgepack.demo.core.ArtifactException;
import org.edgepack.demo.core.ArtifactVerifier;
import org.edgepack.demo.core.EngineSetup;
import org.edgepack.demo.core.PictureRoute;
import org.edgepack.demo.core.PromptTokenizer;

/**
 * core's PromptTokenizer over onnxruntime-genai 0.15.2's Tokenizer, for the picture path. genai's
 * Tokenizer only comes from a Model; the Config overlay (PictureRoute.tokenizerOverlay) points that
 * Model's decoder at the small embedding.onnx, so the decoder's weights are not loaded a second time
 * (tests/test_genai_tokenizer_overlay.py pins the ids against edgepack's tokenizer and the memory saved).
 */
final class GenAiTokenizer implements PromptTokenizer, AutoCloseable {

    private static final String SPACE_PIECE = "\u2581";

    private final Model model;
    private final Tokenizer tokenizer;
    private final String chatTemplate;
    private final boolean addBos;
    private final int bosId, spaceId, unkId;
    private final String bosText, unkText;
    private final int[] eosIds;
    private TokenizerStream open;

    GenAiTokenizer(File onnxFolder, int threads, String embeddingFile, String chatTemplate) throws GenAIException {
        GenAI.setTelemetry(false);
        Config config = new Config(onnxFolder.getAbsolutePath());
        try {
            config.overlay(PictureRoute.tokenizerOverlay(threads, embeddingFile));
            model = new Model(config);
        } finally {
            config.close();
        }
        try {
            tokenizer = new Tokenizer(model);
            bosId = tokenizer.getBosTokenId();
            eosIds = tokenizer.getEosTokenIds();
            spaceId = tokenizer.toTokenId(SPACE_PIECE);
        } catch (GenAIException e) {
            model.close();
            throw e;
        }
        this.chatTemplate = chatTemplate;
        String tokenizerConfig;
        try {
            tokenizerConfig = ArtifactVerifier.readUtf8(new File(onnxFolder, "tokenizer_config.json"));
        } catch (java.io.IOException e) {
            tokenizerConfig = null;
        }
        addBos = EngineSetup.addsBos(tokenizerConfig, new File(onnxFolder, "tokenizer.model").isFile());
        bosText = PictureRoute.specialToken(tokenizerConfig, "bos_token");
        unkText = PictureRoute.specialToken(tokenizerConfig, "unk_token");
        int unk = -1;
        if (!unkText.isEmpty()) {
            try {
                unk = tokenizer.toTokenId(unkText);
            } catch (GenAIException e) {
                unk = -1;
            }
        }
        unkId = unk;
    }

    private static ArtifactException failure(String what, GenAIException e) {
        return new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "onnxruntime-genai's tokenizer " + what
                + ": " + e.getMessage());
    }

    @Override
    public String renderChat(List<Message> messages) throws ArtifactException {
        if (chatTemplate.isEmpty()) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, "This artifact's manifest has no chat "
                    + "template, which a picture prompt needs: export it again with edgepack.");
        }
        try {
            return tokenizer.applyChatTemplate(chatTemplate, PictureRoute.messagesJson(messages), null, true);
        } catch (GenAIException e) {
            throw failure("could not render the chat template", e);
        }
    }

    @Override
    public int[] encode(String text) throws ArtifactException {
        if (text.isEmpty()) {
            return new int[0];
        }
        try {
            Sequences s = tokenizer.encode(text);
            try {
                return s.getSequence(0);
            } finally {
                s.close();
            }
        } catch (GenAIException e) {
            throw failure("could not encode", e);
        }
    }

    @Override
    public int bosId() {
        return bosId;
    }

    @Override
    public boolean addsBos() {
        return addBos;
    }

    @Override
    public int tokenId(String text) {
        try {
            int id = tokenizer.toTokenId(text);
            return id >= 0 && id == unkId && !text.equals(unkText) ? -1 : id;  // an unknown piece is none
        } catch (GenAIException e) {
            return -1;
        }
    }

    @Override
    public String piece(int id) {
        if (id == spaceId) {  // vision.marker_ids' lone "\u2581"
            return SPACE_PIECE;
        }
        if (id == bosId) {  // genai decodes special tokens to nothing readable; the loop compares the text
            return bosText;
        }
        try {
            return tokenizer.decode(new int[] {id});
        } catch (GenAIException e) {
            return "";
        }
    }

    @Override
    public int[] eosIds() {
        return eosIds.clone();
    }

    @Override
    public synchronized Stream newStream() {
        if (open != null) {
            open.close();
            open = null;
        }
        try {
            open = tokenizer.createStream();
        } catch (GenAIException e) {
            throw new IllegalStateException("onnxruntime-genai could not make a tokenizer stream: " + e.getMessage());
        }
        final TokenizerStream stream = open;
        return new Stream() {
            @Override
            public String add(int id) throws ArtifactException {
                try {
                    return stream.decode(id);
                } catch (GenAIException e) {
                    throw failure("could not decode token " + id, e);
                }
            }

            @Override
            public String finish() {
                return "";  // genai's stream holds back nothing it can still complete
            }
        };
    }

    @Override
    public synchronized void close() {
        if (open != null) {
            open.close();
            open = null;
        }
        tokenizer.close();
        model.close();
    }
}
