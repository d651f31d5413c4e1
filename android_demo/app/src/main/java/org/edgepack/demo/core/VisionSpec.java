package org.edgepack.demo.core;

import org.json.JSONArray;
import org.json.JSONObject;

/**
 * A MiniCPM-V image path as the manifest describes it (model.config.vision, edgepack's VisionConfig):
 * what the preprocessing (ImageSlicer, ImagePrompt) and vision.onnx's position feeds (VisionInputs) need.
 * Fields missing from the manifest take VisionConfig's defaults; version and embed_dim are required.
 */
public final class VisionSpec {

    public final String version;
    /** "bucketed" (4.0: NaViT bucket ids) or "interpolated" (2.0: resized position table). */
    public final String position;
    /** The prompt's slice markers: "4.0" or "2.0". */
    public final String layout;
    public final int patchSize, positionGrid, queryNum, sliceSize, maxSlices, embedDim;
    public final boolean sliceMode, useImageId;
    public final float[] mean, std;

    public VisionSpec(String version, String position, String layout, int patchSize, int positionGrid,
                      int queryNum, int sliceSize, int maxSlices, int embedDim, boolean sliceMode,
                      boolean useImageId, float[] mean, float[] std) {
        this.version = version;
        this.position = position;
        this.layout = layout;
        this.patchSize = patchSize;
        this.positionGrid = positionGrid;
        this.queryNum = queryNum;
        this.sliceSize = sliceSize;
        this.maxSlices = maxSlices;
        this.embedDim = embedDim;
        this.sliceMode = sliceMode;
        this.useImageId = useImageId;
        this.mean = mean.clone();
        this.std = std.clone();
    }

    public static VisionSpec fromJson(JSONObject vision) throws ArtifactException {
        if (vision == null) {
            throw bad("model.config.vision is missing: not a MiniCPM-V artifact");
        }
        String version = string(vision, "version", null);
        String position = string(vision, "position", "bucketed");
        if (!position.equals("bucketed") && !position.equals("interpolated")) {
            throw bad("model.config.vision.position is \"" + position + "\", expected \"bucketed\" or \"interpolated\"");
        }
        String layout = string(vision, "layout", "4.0");
        if (!layout.equals("4.0") && !layout.equals("2.0")) {
            throw bad("model.config.vision.layout is \"" + layout + "\", expected \"4.0\" or \"2.0\"");
        }
        int embedDim = positive(vision, "embed_dim", -1);
        if (embedDim % 4 != 0) {
            throw bad("model.config.vision.embed_dim is " + embedDim + ", expected a multiple of 4");
        }
        return new VisionSpec(version, position, layout,
                positive(vision, "patch_size", 14), positive(vision, "position_grid", 70),
                positive(vision, "query_num", 64), positive(vision, "slice_size", 448),
                positive(vision, "max_slices", 9), embedDim,
                bool(vision, "slice_mode", true), bool(vision, "use_image_id", true),
                triple(vision, "image_mean", false), triple(vision, "image_std", true));
    }

    private static ArtifactException bad(String message) {
        return new ArtifactException(ArtifactException.Kind.INVALID_MANIFEST, message);
    }

    private static String string(JSONObject o, String key, String dflt) throws ArtifactException {
        Object v = o.opt(key);
        if (v == null || v == JSONObject.NULL) {
            if (dflt == null) {
                throw bad("model.config.vision." + key + " is missing");
            }
            return dflt;
        }
        if (!(v instanceof String) || ((String) v).isEmpty()) {
            throw bad("model.config.vision." + key + " is " + v + ", expected a non-empty string");
        }
        return (String) v;
    }

    private static int positive(JSONObject o, String key, int dflt) throws ArtifactException {
        Object v = o.opt(key);
        if (v == null || v == JSONObject.NULL) {
            if (dflt < 0) {
                throw bad("model.config.vision." + key + " is missing");
            }
            return dflt;
        }
        if (!(v instanceof Integer || v instanceof Long) || ((Number) v).longValue() < 1
                || ((Number) v).longValue() > 1 << 20) {
            throw bad("model.config.vision." + key + " is " + v + ", expected a positive integer");
        }
        return ((Number) v).intValue();
    }

    private static boolean bool(JSONObject o, String key, boolean dflt) throws ArtifactException {
        Object v = o.opt(key);
        if (v == null || v == JSONObject.NULL) {
            return dflt;
        }
        if (!(v instanceof Boolean)) {
            throw bad("model.config.vision." + key + " is " + v + ", expected true or false");
        }
        return (Boolean) v;
    }

    private static float[] triple(JSONObject o, String key, boolean nonZero) throws ArtifactException {
        Object v = o.opt(key);
        if (v == null || v == JSONObject.NULL) {
            return new float[] {0.5f, 0.5f, 0.5f};
        }
        String expected = ", expected 3 numbers" + (nonZero ? " other than 0" : "");
        if (!(v instanceof JSONArray) || ((JSONArray) v).length() != 3) {
            throw bad("model.config.vision." + key + " is " + v + expected);
        }
        JSONArray a = (JSONArray) v;
        float[] out = new float[3];
        for (int i = 0; i < 3; i++) {
            Object x = a.opt(i);
            if (!(x instanceof Number) || x instanceof Boolean) {
                throw bad("model.config.vision." + key + " is " + v + expected);
            }
            double d = ((Number) x).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d) || (nonZero && d == 0.0)) {
                throw bad("model.config.vision." + key + " is " + v + expected);
            }
            out[i] = (float) d;  // numpy: np.asarray(mean, np.float32)
        }
        return out;
    }
}
