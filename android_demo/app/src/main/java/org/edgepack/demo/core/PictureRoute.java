package org.edgepack.demo.core;

import java.io.File;
import java.util.List;
import java.util.Locale;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Which loop the app runs an artifact with, decided before anything is loaded, and the messages for
 * pictures it cannot take. A MiniCPM-V artifact with its vision half (VisionArtifact.requirePictures
 * passes) runs every turn, with or without a picture, in core's MultimodalChat over onnxruntime's Java
 * API; any other artifact keeps onnxruntime-genai's text loop, and a picture asked of it gets the one
 * message VisionArtifact words (a text model; MiniCPM-V exported without vision.onnx). The memory check
 * counts the files the chosen loop loads. Pure logic: the activity only shows the messages.
 */
public final class PictureRoute {

    /** genai's text graph: the picture loop never loads it (the tokenizer's Model loads embedding.onnx). */
    static final String TEXT_GRAPH = "model.onnx";

    /** True: MultimodalChat over onnxruntime for every turn; false: onnxruntime-genai's text loop. */
    public final boolean pictures;
    /** The artifact's picture facts (also for a text artifact: then requirePictures() says why not). */
    public final VisionArtifact vision;
    /** The message for a picture this artifact cannot take, or null when pictures is true. */
    public final String pictureRefusal;
    /** Bytes of the onnx files the chosen loop loads. */
    public final long bytesToLoad;

    private PictureRoute(boolean pictures, VisionArtifact vision, String pictureRefusal, long bytesToLoad) {
        this.pictures = pictures;
        this.vision = vision;
        this.pictureRefusal = pictureRefusal;
        this.bytesToLoad = bytesToLoad;
    }

    /** Reads root's edgepack.json and genai_config.json (after ArtifactVerifier.verify checked them). */
    public static PictureRoute choose(File root, ArtifactManifest manifest) throws ArtifactException {
        return choose(manifest, VisionArtifact.read(root));
    }

    public static PictureRoute choose(ArtifactManifest manifest, VisionArtifact vision) {
        try {
            vision.requirePictures();
        } catch (ArtifactException e) {
            return new PictureRoute(false, vision, e.getMessage(), manifest.totalBytes());
        }
        long bytes = 0;
        for (ArtifactManifest.FileEntry f : manifest.onnxFiles) {
            if (!f.path.equals(manifest.onnxPath + "/" + TEXT_GRAPH)) {
                bytes += f.bytes;
            }
        }
        return new PictureRoute(true, vision, null, bytes);
    }

    /** EngineSetup.memoryNeeded over the files this route loads (the same margins as the text path). */
    public long memoryNeeded() {
        return EngineSetup.memoryNeeded(bytesToLoad);
    }

    /** Throws pictureRefusal (one line) unless this artifact answers about pictures. */
    public void requirePictures() throws ArtifactException {
        if (!pictures) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, pictureRefusal);
        }
    }

    /** What the screen names the loop: "onnxruntime (picture loop)" or "onnxruntime-genai". */
    public String engineName() {
        return pictures ? "onnxruntime (picture loop)" : "onnxruntime-genai";
    }

    /**
     * The picture's header as BitmapFactory read it (inJustDecodeBounds): width or height -1 when the
     * file is no picture the phone decodes; then ImageLimits, before a single pixel is decoded.
     */
    public static void checkPicture(String name, int width, int height) throws ArtifactException {
        if (width <= 0 || height <= 0) {
            throw new ArtifactException(ArtifactException.Kind.BAD_IMAGE, name + " is not a picture this phone can "
                    + "decode (JPEG, PNG, WebP, GIF, BMP; HEIF from Android 9). Pick a photo or a screenshot.");
        }
        ImageLimits.check(name, width, height);
    }

    /** The message when the decoder read the bounds but then gave no pixels (a truncated or corrupt file). */
    public static String undecodable(String name) {
        return name + ": the picture is truncated or corrupt (the phone's decoder gave no pixels).";
    }

    /**
     * genai Config.overlay() for the tokenizer's Model: the decoder's threads, and its file pointed at
     * embedding.onnx, so genai loads the embedding graph instead of model.onnx's decoder weights.
     */
    public static String tokenizerOverlay(int threads, String embeddingFile) {
        try {
            JSONObject options = new JSONObject().put("intra_op_num_threads", threads);
            JSONObject decoder = new JSONObject().put("session_options", options).put("filename", embeddingFile);
            return new JSONObject().put("model", new JSONObject().put("decoder", decoder)).toString();
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * A special token's spelling in tokenizer_config.json (key "bos_token" or "unk_token": a string, or an
     * object with "content"), "" when the file or the key is absent.
     */
    public static String specialToken(String tokenizerConfigJson, String key) {
        if (tokenizerConfigJson == null) {
            return "";
        }
        try {
            JSONObject config = new JSONObject(tokenizerConfigJson);
            Object v = config.opt(key);
            if (v instanceof JSONObject) {
                return ((JSONObject) v).optString("content", "");
            }
            return v instanceof String ? (String) v : "";
        } catch (JSONException e) {
            return "";
        }
    }

    /** Chat messages as Tokenizer.applyChatTemplate() wants them. */
    public static String messagesJson(List<PromptTokenizer.Message> messages) {
        JSONArray out = new JSONArray();
        try {
            for (PromptTokenizer.Message m : messages) {
                out.put(new JSONObject().put("role", m.role).put("content", m.content));
            }
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return out.toString();
    }

    /** The screen's line after a picture is encoded, e.g. "encode 3 slices in 912 ms (304 ms/slice)". */
    public static String encodeSummary(double[] encodeMs) {
        double total = 0;
        for (double ms : encodeMs) {
            total += ms;
        }
        int n = encodeMs.length;
        return String.format(Locale.ROOT, "encode %d slice%s in %.0f ms (%.0f ms/slice)", n, n == 1 ? "" : "s",
                total, n == 0 ? 0 : total / n);
    }
}
