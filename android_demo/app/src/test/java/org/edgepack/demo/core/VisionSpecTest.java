package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import org.json.JSONException;
import org.json.JSONObject;
import org.junit.jupiter.api.Test;

/** VisionSpec.fromJson reads model.config.vision and refuses a bad field with one clear message. */
class VisionSpecTest {

    private static final String V20 = "{\"version\": \"2.0\", \"hidden_size\": 1152, \"embed_dim\": 2304,"
            + " \"patch_size\": 14, \"position\": \"interpolated\", \"position_grid\": 27, \"query_num\": 64,"
            + " \"query_pos\": true, \"slice_size\": 448, \"max_slices\": 9, \"slice_mode\": true,"
            + " \"use_image_id\": false, \"layout\": \"2.0\", \"image_mean\": [0.5, 0.5, 0.5],"
            + " \"image_std\": [0.25, 0.5, 1], \"minicpmv_version\": 0}";

    @Test
    void readsAManifestsVision() throws Exception {
        VisionSpec v = VisionSpec.fromJson(new JSONObject(V20));
        assertEquals("2.0", v.version);
        assertEquals("interpolated", v.position);
        assertEquals("2.0", v.layout);
        assertEquals(14, v.patchSize);
        assertEquals(27, v.positionGrid);
        assertEquals(64, v.queryNum);
        assertEquals(448, v.sliceSize);
        assertEquals(9, v.maxSlices);
        assertEquals(2304, v.embedDim);
        assertTrue(v.sliceMode);
        assertFalse(v.useImageId);
        assertArrayEquals(new float[] {0.5f, 0.5f, 0.5f}, v.mean);
        assertArrayEquals(new float[] {0.25f, 0.5f, 1f}, v.std);
    }

    @Test
    void missingFieldsTakeVisionConfigsDefaults() throws Exception {
        VisionSpec v = VisionSpec.fromJson(new JSONObject("{\"version\": \"4.0\", \"embed_dim\": 2560}"));
        assertEquals("bucketed", v.position);
        assertEquals("4.0", v.layout);
        assertEquals(14, v.patchSize);
        assertEquals(70, v.positionGrid);
        assertEquals(64, v.queryNum);
        assertEquals(448, v.sliceSize);
        assertEquals(9, v.maxSlices);
        assertTrue(v.sliceMode);
        assertTrue(v.useImageId);
        assertArrayEquals(new float[] {0.5f, 0.5f, 0.5f}, v.std);
    }

    private static String refusal(String field, Object value) throws JSONException {
        JSONObject o = new JSONObject(V20);
        if (value == null) {
            o.remove(field);
        } else {
            o.put(field, value);
        }
        try {
            VisionSpec.fromJson(o);
        } catch (ArtifactException e) {
            assertEquals(ArtifactException.Kind.INVALID_MANIFEST, e.kind);
            assertFalse(e.getMessage().contains("\n"), e.getMessage());
            return e.getMessage();
        }
        fail(field + " = " + value + " was accepted");
        return null;
    }

    @Test
    void refusesBadFieldsByName() throws Exception {
        assertEquals("model.config.vision.position is \"nearest\", expected \"bucketed\" or \"interpolated\"",
                refusal("position", "nearest"));
        assertEquals("model.config.vision.layout is \"2.6\", expected \"4.0\" or \"2.0\"", refusal("layout", "2.6"));
        assertEquals("model.config.vision.patch_size is 14, expected a positive integer", refusal("patch_size", "14"));
        assertEquals("model.config.vision.slice_size is 0, expected a positive integer", refusal("slice_size", 0));
        assertEquals("model.config.vision.max_slices is 9.5, expected a positive integer", refusal("max_slices", 9.5));
        assertEquals("model.config.vision.embed_dim is missing", refusal("embed_dim", null));
        assertEquals("model.config.vision.embed_dim is 2302, expected a multiple of 4", refusal("embed_dim", 2302));
        assertEquals("model.config.vision.version is missing", refusal("version", null));
        assertEquals("model.config.vision.slice_mode is 1, expected true or false", refusal("slice_mode", 1));
        assertEquals("model.config.vision.image_std is [0.5,0,0.5], expected 3 numbers other than 0",
                refusal("image_std", new org.json.JSONArray("[0.5, 0, 0.5]")));
        assertEquals("model.config.vision.image_mean is [0.5,0.5], expected 3 numbers",
                refusal("image_mean", new org.json.JSONArray("[0.5, 0.5]")));
    }

    @Test
    void refusesAMissingVision() {
        try {
            VisionSpec.fromJson(null);
            fail("null was accepted");
        } catch (ArtifactException e) {
            assertEquals("model.config.vision is missing: not a MiniCPM-V artifact", e.getMessage());
        }
    }
}
