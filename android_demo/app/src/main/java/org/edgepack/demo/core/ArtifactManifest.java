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

    /**
     * One fidelity report of the onnx entry against the float reference: "fidelity" (measured at export,
     * usually on x86) or "fidelity_arm64" (added by edgepack check-arm --record, onnxruntime's arm64 kernels
     * under qemu), with the CPU kernels it was measured on when the manifest names them.
     */
    public static final class Fidelity {
        public final double pplIncreasePct;
        /** Share of positions whose top-1 token matches the float model's, 0..1. */
        public final double top1Agreement;
        public final int tokens;
        /** "x86_64", "aarch64", ... or "" when the manifest predates fidelity.kernels. */
        public final String arch;
        public final String engine;
        /** MatMulNBits' accuracy_level the figure was measured with, or -1 when not recorded. */
        public final int accuracyLevel;

        Fidelity(double pplIncreasePct, double top1Agreement, int tokens, String arch, String engine,
                 int accuracyLevel) {
            this.pplIncreasePct = pplIncreasePct;
            this.top1Agreement = top1Agreement;
            this.tokens = tokens;
            this.arch = arch;
            this.engine = engine;
            this.accuracyLevel = accuracyLevel;
        }

        /** One line for the screen, e.g. "aarch64 (onnxruntime 1.29.0): Δppl +13.7%, top-1 68.6% on 256 tokens". */
        public String summary() {
            String where = arch.isEmpty() ? "" : arch + (engine.isEmpty() ? "" : " (" + engine + ")") + ": ";
            return String.format(java.util.Locale.ROOT, "%s\u0394ppl %+.1f%%, top-1 %.1f%% on %d tokens", where,
                    pplIncreasePct, 100 * top1Agreement, tokens);
        }

        /** null when the object is absent or lacks the figures (an optional display field never blocks loading). */
        static Fidelity parse(JSONObject f) {
            if (f == null || !f.has("ppl_increase_pct") || !f.has("top1_agreement")) {
                return null;
            }
            double ppl = f.optDouble("ppl_increase_pct", Double.NaN);
            double top1 = f.optDouble("top1_agreement", Double.NaN);
            if (Double.isNaN(ppl) || Double.isNaN(top1)) {
                return null;
            }
            JSONObject k = f.optJSONObject("kernels");
            return new Fidelity(ppl, top1, f.optInt("tokens", 0), k == null ? "" : k.optString("arch", ""),
                    k == null ? "" : k.optString("engine", ""), k == null ? -1 : k.optInt("accuracy_level", -1));
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
    /** The onnx entry's export-time fidelity, or null when it has none. */
    public final Fidelity fidelity;
    /** Its fidelity on arm64 kernels (edgepack check-arm --record), or null when not recorded: show it when present. */
    public final Fidelity fidelityArm64;

    private ArtifactManifest(int schema, String edgepackVersion, String modelName, String onnxPath,
                             List<FileEntry> onnxFiles, String chatTemplate, Fidelity fidelity, Fidelity fidelityArm64) {
        this.schema = schema;
        this.edgepackVersion = edgepackVersion;
        this.modelName = modelName;
        this.onnxPath = onnxPath;
        this.onnxFiles = Collections.unmodifiableList(onnxFiles);
        this.chatTemplate = chatTemplate;
        this.fidelity = fidelity;
        this.fidelityArm64 = fidelityArm64;
    }

    /** The screen's fidelity line: the arm64 figures (check-arm --record) when the manifest has them, else the
     *  export's own figures said to be from another CPU's kernels, else "" (nothing measured). */
    public String fidelityLine() {
        if (fidelityArm64 != null) {
            return "Fidelity on arm64 kernels: " + fidelityArm64.summary();
        }
        if (fidelity != null) {
            return "Fidelity (not checked on arm64 kernels): " + fidelity.summary();
        }
        return "";
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
                        modelName, path, files, chatTemplate, Fidelity.parse(entry.optJSONObject("fidelity")),
                        Fidelity.parse(entry.optJSONObject("fidelity_arm64")));
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
