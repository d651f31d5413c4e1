package org.edgepack.demo.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * What the picture loop reads from an artifact before loading anything: the manifest's
 * model.config.vision and onnx entry's "multimodal" files, and genai_config.json's decoder shape
 * (layers, KV heads, head size, the past/present names), vocabulary and EOS ids. A text artifact
 * parses too ({@link #multimodal} false); {@link #requirePictures()} is the one place that says it
 * cannot take a picture, and a MiniCPM-V artifact whose vision.onnx is absent fails here, before
 * any graph is loaded.
 */
public final class VisionArtifact {

    public static final String VISION_FILE = "vision.onnx", EMBEDDING_FILE = "embedding.onnx",
            DECODER_FILE = "decoder_embeds.onnx";

    public final String modelName;
    /** The manifest's model.config.vision, or null for a text model. */
    public final JSONObject visionJson;
    /** The onnx entry has a "multimodal" block (vision.onnx + embedding.onnx + decoder_embeds.onnx). */
    public final boolean multimodal;
    public final File onnxDir;
    public final String visionFile, embeddingFile, decoderFile;
    public final int layers, kvHeads, headSize, vocabSize, contextLength;
    public final int[] eosIds;
    public final String pastKey, pastValue, presentKey, presentValue;  // "%d" patterns

    private VisionArtifact(String modelName, JSONObject visionJson, boolean multimodal, File onnxDir,
                           String visionFile, String embeddingFile, String decoderFile, JSONObject genai)
            throws JSONException {
        this.modelName = modelName;
        this.visionJson = visionJson;
        this.multimodal = multimodal;
        this.onnxDir = onnxDir;
        this.visionFile = visionFile;
        this.embeddingFile = embeddingFile;
        this.decoderFile = decoderFile;
        JSONObject model = genai.getJSONObject("model");
        JSONObject dec = model.getJSONObject("decoder");
        layers = dec.getInt("num_hidden_layers");
        kvHeads = dec.getInt("num_key_value_heads");
        headSize = dec.getInt("head_size");
        vocabSize = model.getInt("vocab_size");
        contextLength = model.getInt("context_length");
        Object eos = model.get("eos_token_id");
        if (eos instanceof JSONArray) {
            JSONArray a = (JSONArray) eos;
            eosIds = new int[a.length()];
            for (int i = 0; i < a.length(); i++) {
                eosIds[i] = a.getInt(i);
            }
        } else {
            eosIds = new int[] {model.getInt("eos_token_id")};
        }
        JSONObject in = dec.getJSONObject("inputs"), out = dec.getJSONObject("outputs");
        pastKey = in.getString("past_key_names");
        pastValue = in.getString("past_value_names");
        presentKey = out.getString("present_key_names");
        presentValue = out.getString("present_value_names");
    }

    /** Reads root/edgepack.json and the onnx folder's genai_config.json. */
    public static VisionArtifact read(File root) throws ArtifactException {
        String manifest = readText(new File(root, ArtifactManifest.FILE_NAME));
        String onnxPath = ArtifactManifest.parse(manifest).onnxPath;
        File onnxDir = new File(root, onnxPath);
        return parse(manifest, readText(new File(onnxDir, "genai_config.json")), onnxDir);
    }

    public static VisionArtifact parse(String manifestJson, String genaiConfigJson, File onnxDir)
            throws ArtifactException {
        try {
            JSONObject root = new JSONObject(manifestJson);
            JSONObject model = root.optJSONObject("model");
            JSONObject config = model == null ? null : model.optJSONObject("config");
            JSONObject vision = config == null ? null : config.optJSONObject("vision");
            String name = model == null ? "" : model.optString("name", "");
            JSONObject entry = null;
            JSONArray artifacts = root.getJSONArray("artifacts");
            for (int i = 0; i < artifacts.length() && entry == null; i++) {
                if (artifacts.getJSONObject(i).getString("format").equals("onnx")) {
                    entry = artifacts.getJSONObject(i);
                }
            }
            JSONObject mm = entry == null ? null : entry.optJSONObject("multimodal");
            String visionFile = VISION_FILE, embedding = EMBEDDING_FILE, decoder = DECODER_FILE;
            if (mm != null) {
                embedding = mm.optString("embedding", EMBEDDING_FILE);
                decoder = mm.optString("decoder", DECODER_FILE);
                JSONObject v = mm.optJSONObject("vision");
                visionFile = v == null ? null : v.optString("path", VISION_FILE);
            }
            return new VisionArtifact(name, vision, mm != null, onnxDir, visionFile, embedding, decoder,
                    new JSONObject(genaiConfigJson));
        } catch (JSONException e) {
            throw new ArtifactException(ArtifactException.Kind.INVALID_MANIFEST,
                    "This artifact's edgepack.json or genai_config.json cannot be read: " + e.getMessage());
        }
    }

    /**
     * Throws unless this artifact can answer about a picture: a MiniCPM-V model (vision description
     * in the manifest) whose vision.onnx, embedding.onnx and decoder_embeds.onnx are all in the folder.
     */
    public void requirePictures() throws ArtifactException {
        String who = modelName.isEmpty() ? "This artifact" : "This artifact (" + modelName + ")";
        if (visionJson == null) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED, who
                    + " is a text model: it cannot answer about a picture. Push a MiniCPM-V artifact "
                    + "(edgepack export --model openbmb/MiniCPM-V-4 --int4 --format onnx).");
        }
        if (!multimodal || visionFile == null) {
            throw new ArtifactException(ArtifactException.Kind.MISSING, who
                    + " is MiniCPM-V but was exported without its vision half (no vision.onnx in the manifest); "
                    + "export it again with edgepack export --format onnx.");
        }
        for (String f : new String[] {visionFile, embeddingFile, decoderFile}) {
            if (!new File(onnxDir, f).isFile()) {
                throw new ArtifactException(ArtifactException.Kind.MISSING, who + " is MiniCPM-V but "
                        + f + " is not in " + onnxDir.getName() + "/: push the whole artifact folder again.");
            }
        }
    }

    static String readText(File f) throws ArtifactException {
        if (!f.isFile()) {
            throw new ArtifactException(ArtifactException.Kind.NOT_FOUND, f.getPath() + " is not there.");
        }
        try {
            InputStream in = new FileInputStream(f);
            try {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                byte[] buf = new byte[65536];
                for (int n; (n = in.read(buf)) > 0; ) {
                    out.write(buf, 0, n);
                }
                return new String(out.toByteArray(), "UTF-8");
            } finally {
                in.close();
            }
        } catch (IOException e) {
            throw new ArtifactException(ArtifactException.Kind.NOT_FOUND, f.getPath() + " cannot be read: " + e.getMessage());
        }
    }
}
