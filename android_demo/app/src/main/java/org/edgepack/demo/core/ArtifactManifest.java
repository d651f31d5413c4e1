package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.regex.Pattern;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The parts of edgepack.json (schema 1) the app needs: the "onnx" artifact entry and the files
 * it lists. Unknown fields are ignored; a newer schema is refused.
 */
public final class ArtifactManifest {

    public static final String FILE_NAME = "edgepack.json";
    public static final int SUPPORTED_SCHEMA = 1;

    private static final Pattern SHA256_HEX = Pattern.compile("[0-9a-f]{64}");

    /** One file of an artifact entry, its path relative to the artifact root. */
    public static final class FileEntry {
        public final String path;
        public final long bytes;
        public final String sha256;

        public FileEntry(String path, long bytes, String sha256) {
            this.path = path;
            this.bytes = bytes;
            this.sha256 = sha256;
        }
    }

    public final int schema;
    public final String edgepackVersion;
    public final String modelName;
    /** Folder of the onnx entry relative to the artifact root: what onnxruntime-genai loads. */
    public final String onnxPath;
    public final List<FileEntry> onnxFiles;
    /** The tokenizer's chat template, or "" when the manifest has none. */
    public final String chatTemplate;

    private ArtifactManifest(int schema, String edgepackVersion, String modelName, String onnxPath,
                             List<FileEntry> onnxFiles, String chatTemplate) {
        this.schema = schema;
        this.edgepackVersion = edgepackVersion;
        this.modelName = modelName;
        this.onnxPath = onnxPath;
        this.onnxFiles = Collections.unmodifiableList(onnxFiles);
        this.chatTemplate = chatTemplate;
    }

    public long totalBytes() {
        long total = 0;
        for (FileEntry f : onnxFiles) {
            total += f.bytes;
        }
        return total;
    }

    public static ArtifactManifest parse(String json) throws ArtifactException {
        try {
            return parseOrThrow(new JSONObject(json));
        } catch (JSONException e) {
            throw invalid("edgepack.json is not a valid manifest: " + e.getMessage());
        }
    }

    private static ArtifactManifest parseOrThrow(JSONObject root) throws JSONException, ArtifactException {
        if (!root.has("schema")) {
            throw invalid("edgepack.json has no \"schema\" field: it was not written by edgepack.");
        }
        int schema = root.getInt("schema");
        if (schema > SUPPORTED_SCHEMA) {
            throw new ArtifactException(ArtifactException.Kind.UNSUPPORTED,
                    "This artifact uses manifest schema " + schema + ", but this app reads schema "
                            + SUPPORTED_SCHEMA + " at most. Update the app, or export with the "
                            + "edgepack version that matches it.");
        }
        if (schema < 1) {
            throw invalid("edgepack.json has schema " + schema + "; schemas start at 1.");
        }
        JSONObject model = root.optJSONObject("model");
        String modelName = model == null ? "" : model.optString("name", "");
        JSONObject tokenizer = root.optJSONObject("tokenizer");
        String chatTemplate = tokenizer == null ? "" : tokenizer.optString("chat_template", "");

        JSONArray artifacts = root.getJSONArray("artifacts");
        List<String> formats = new ArrayList<String>();
        for (int i = 0; i < artifacts.length(); i++) {
            JSONObject entry = artifacts.getJSONObject(i);
            String format = entry.getString("format");
            formats.add(format);
            if (format.equals("onnx")) {
                String path = checkedPath(entry.getString("path"));
                List<FileEntry> files = parseFiles(entry.getJSONArray("files"));
                if (files.isEmpty()) {
                    throw invalid("The onnx entry of edgepack.json lists no files.");
                }
                return new ArtifactManifest(schema, root.optString("edgepack_version", "?"),
                        modelName, path, files, chatTemplate);
            }
        }
        throw invalid("This artifact has no ONNX export (it has: " + formats
                + "). Export it with: edgepack export --int4 --format onnx");
    }

    private static List<FileEntry> parseFiles(JSONArray array) throws JSONException, ArtifactException {
        List<FileEntry> files = new ArrayList<FileEntry>();
        for (int i = 0; i < array.length(); i++) {
            JSONObject f = array.getJSONObject(i);
            String path = checkedPath(f.getString("path"));
            long bytes = f.getLong("bytes");
            String sha256 = f.getString("sha256").toLowerCase(java.util.Locale.ROOT);
            if (bytes < 0) {
                throw invalid("edgepack.json gives " + path + " a negative size.");
            }
            if (!SHA256_HEX.matcher(sha256).matches()) {
                throw invalid("edgepack.json gives " + path + " a sha256 that is not 64 hex digits.");
            }
            files.add(new FileEntry(path, bytes, sha256));
        }
        return files;
    }

    /** A path inside the artifact: relative, '/'-separated, no '..' and no empty parts. */
    private static String checkedPath(String path) throws ArtifactException {
        if (path.isEmpty() || path.startsWith("/") || path.contains("\\")) {
            throw invalid("edgepack.json has a path outside the artifact: \"" + path + "\"");
        }
        for (String part : path.split("/", -1)) {
            if (part.isEmpty() || part.equals("..") || part.equals(".")) {
                throw invalid("edgepack.json has a path outside the artifact: \"" + path + "\"");
            }
        }
        return path;
    }

    private static ArtifactException invalid(String message) {
        return new ArtifactException(ArtifactException.Kind.INVALID_MANIFEST, message);
    }
}
