package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.function.Executable;

/**
 * The Java preprocessing held to edgepack.model.image on the pictures tests/android_image_fixtures.py
 * draws (run_jvm_tests.sh generates them into a temporary folder named by EDGEPACK_IMAGE_FIXTURES):
 * same EXIF orientation, same RGB, same slice grid and sizes, same prompt layout, slice pixels within
 * 1 LSB (the maximum found is printed), position inputs within float32 rounding.
 */
class ImageFixturesTest {

    private static String pillow = "?";
    private static int maxLsb = 0;
    private static long pixelsCompared = 0;

    /** The fixtures folder, or null with why in problem[0]. */
    static File folder(String[] problem) {
        String dir = System.getProperty("edgepack.image.fixtures");
        if (dir == null || dir.isEmpty()) {
            dir = System.getenv("EDGEPACK_IMAGE_FIXTURES");
        }
        if (dir == null || dir.isEmpty()) {
            problem[0] = "EDGEPACK_IMAGE_FIXTURES is not set: run android_demo/run_jvm_tests.sh, or generate the "
                    + "folder with `python tests/android_image_fixtures.py DIR` and set EDGEPACK_IMAGE_FIXTURES=DIR";
            return null;
        }
        File f = new File(dir, "index.json");
        if (!f.isFile()) {
            problem[0] = f + " is missing: generate it with `python tests/android_image_fixtures.py " + dir + "`";
            return null;
        }
        return new File(dir);
    }

    @TestFactory
    List<DynamicTest> matchesThePythonPreprocessing() throws IOException, JSONException, ArtifactException {
        final String[] problem = new String[1];
        final File dir = folder(problem);
        if (dir == null) {  // a failed test, not a skipped one
            return java.util.Collections.singletonList(DynamicTest.dynamicTest("fixtures folder", new Executable() {
                public void execute() {
                    fail(problem[0]);
                }
            }));
        }
        final JSONObject index = new JSONObject(new String(Files.readAllBytes(new File(dir, "index.json").toPath()),
                StandardCharsets.UTF_8));
        final JSONObject visions = index.getJSONObject("visions");
        pillow = index.optString("pillow", "?");
        List<DynamicTest> tests = new ArrayList<DynamicTest>();
        JSONArray cases = index.getJSONArray("cases");
        for (int i = 0; i < cases.length(); i++) {
            final JSONObject c = cases.getJSONObject(i);
            tests.add(DynamicTest.dynamicTest("picture " + c.getString("name"), new Executable() {
                public void execute() throws Throwable {
                    checkCase(dir, c, visions);
                }
            }));
        }
        tests.add(DynamicTest.dynamicTest("refused sizes", new Executable() {
            public void execute() throws Throwable {
                checkRefused(index.getJSONArray("refused"));
            }
        }));
        tests.add(DynamicTest.dynamicTest("grid and sizes of " + index.getJSONArray("sizes").length() + " sizes",
                new Executable() {
                    public void execute() throws Throwable {
                        checkSizes(index.getJSONArray("sizes"), visions);
                    }
                }));
        tests.add(DynamicTest.dynamicTest("position inputs", new Executable() {
            public void execute() throws Throwable {
                checkPositions(new File(dir, "pos"), index.getJSONArray("positions"));
            }
        }));
        tests.add(DynamicTest.dynamicTest("Pillow bicubic resize of " + index.getJSONArray("resizes").length()
                + " pictures", new Executable() {
                    public void execute() throws Throwable {
                        checkResizes(new File(dir, "resize"), index.getJSONArray("resizes"));
                    }
                }));
        tests.add(DynamicTest.dynamicTest("normalize table", new Executable() {
            public void execute() throws Throwable {
                Iterator<?> it = visions.keys();
                while (it.hasNext()) {
                    String v = (String) it.next();
                    checkTable(floats(new File(dir, v + ".table")), VisionSpec.fromJson(visions.getJSONObject(v)));
                }
            }
        }));
        tests.add(DynamicTest.dynamicTest("max pixel difference", new Executable() {
            public void execute() {
                System.out.println("max pixel difference: " + maxLsb + " LSB over " + pixelsCompared
                        + " values (fixtures made with Pillow " + pillow + ")");
                assertTrue(pixelsCompared > 0, "no pixels were compared");
                assertTrue(maxLsb <= 1, "max pixel difference " + maxLsb + " LSB");
            }
        }));
        return tests;
    }

    private static void checkCase(File dir, JSONObject c, JSONObject visions) throws Exception {
        String name = c.getString("name");
        int w = c.getInt("width"), h = c.getInt("height");
        int[] argb = ints(new File(dir, name + ".argb"));
        assertEquals((long) w * h, argb.length, name + ": ARGB size");
        int orientation = Exif.orientation(Files.readAllBytes(new File(dir, name + ".head").toPath()));
        assertEquals(c.getInt("orientation"), orientation, name + ": EXIF orientation");
        ImageLimits.check(w, h);
        RgbImage im = RgbImage.fromArgb(argb, w, h);
        if ((long) w * h <= 1_000_000) {  // the copyPixelsToBuffer route gives the same picture
            byte[] rgba = new byte[argb.length * 4];
            for (int i = 0; i < argb.length; i++) {
                rgba[4 * i] = (byte) (argb[i] >> 16);
                rgba[4 * i + 1] = (byte) (argb[i] >> 8);
                rgba[4 * i + 2] = (byte) argb[i];
                rgba[4 * i + 3] = (byte) (argb[i] >>> 24);
            }
            assertArrayEquals(im.rgb, RgbImage.fromRgba(rgba, w, h).rgb, name + ": fromRgba vs fromArgb");
        }
        argb = null;
        im = im.orient(orientation);
        JSONArray rgbSize = c.getJSONArray("rgb_size");
        assertEquals(rgbSize.getInt(0), im.width, name + ": width after EXIF rotation");
        assertEquals(rgbSize.getInt(1), im.height, name + ": height after EXIF rotation");
        if (c.optBoolean("rgb", false)) {
            byte[] rgb = Files.readAllBytes(new File(dir, name + ".rgb").toPath());
            int worst = 0, at = -1;
            for (int i = 0; i < rgb.length; i++) {
                int d = Math.abs((rgb[i] & 0xff) - (im.rgb[i] & 0xff));
                if (d > worst) {
                    worst = d;
                    at = i;
                }
            }
            assertEquals(0, worst, name + ": RGB after read_image differs at byte " + at);
        }
        Iterator<?> it = visions.keys();
        while (it.hasNext()) {
            String v = (String) it.next();
            checkSlices(dir, name + " (" + v + ")", im, VisionSpec.fromJson(visions.getJSONObject(v)),
                    c.getJSONObject(v), floats(new File(dir, v + ".table")), name);
        }
    }

    private static void checkSlices(File dir, String what, RgbImage im, VisionSpec spec, JSONObject e,
                                    float[] table, String name) throws Exception {
        ImageSlicer.Sliced s = ImageSlicer.slice(im, spec);
        JSONArray grid = e.optJSONArray("grid");
        if (grid == null) {
            assertNull(s.grid, what + ": Python has no grid");
        } else {
            assertArrayEquals(new int[] {grid.getInt(0), grid.getInt(1)}, s.grid, what + ": grid");
        }
        JSONArray sizes = e.getJSONArray("sizes");
        assertEquals(sizes.length(), s.sizes.length, what + ": number of slices");
        for (int k = 0; k < sizes.length(); k++) {
            assertArrayEquals(new int[] {sizes.getJSONArray(k).getInt(0), sizes.getJSONArray(k).getInt(1)},
                    s.sizes[k], what + ": size of slice " + k);
        }
        JSONArray parts = e.getJSONArray("parts");
        int[] indexes = {0, 3};
        for (int j = 0; j < indexes.length; j++) {
            assertEquals(jsonList(parts.getJSONArray(j)), ImagePrompt.parts(spec, s.grid, indexes[j]),
                    what + ": prompt parts for image " + indexes[j]);
        }
        for (int k = 0; k < s.pixels.length; k++) {
            VisionInputs.Feeds f = VisionInputs.feeds(s, k, spec);
            int h = s.sizes[k][0] / spec.patchSize, w = s.sizes[k][1] / spec.patchSize;
            assertArrayEquals(new long[] {1, 3, s.sizes[k][0], s.sizes[k][1]}, f.pixelShape, what + ": pixel_values shape");
            assertArrayEquals(new long[] {(long) h * w, spec.embedDim}, f.keyPosShape, what + ": key_pos shape");
            assertEquals((long) h * w * spec.embedDim, f.keyPos.length, what + ": key_pos length");
            if (spec.position.equals("bucketed")) {
                assertArrayEquals(VisionInputs.bucketedIds(h, w, spec.positionGrid), f.positionIds, what + ": position_ids");
                assertNull(f.posRows, what + ": pos_rows for a bucketed vision");
            } else {
                assertNull(f.positionIds, what + ": position_ids for an interpolated vision");
                assertArrayEquals(new long[] {h, spec.positionGrid}, f.posRowsShape, what + ": pos_rows shape");
                assertArrayEquals(new long[] {w, spec.positionGrid}, f.posColsShape, what + ": pos_cols shape");
                assertArrayEquals(VisionInputs.aaBicubicMatrix(w, spec.positionGrid), f.posCols, 0f, what + ": pos_cols");
            }
            if (k > 1) {
                break;  // the overview and one slice: enough for the wiring; values are checked on pos/
            }
        }
        byte[] u8 = Files.readAllBytes(new File(dir, name + "." + e.getString("pixels") + ".u8").toPath());
        int off = 0, worst = 0;
        String where = "";
        for (int k = 0; k < s.pixels.length; k++) {
            float[] p = s.pixels[k];
            int plane = s.sizes[k][0] * s.sizes[k][1];
            assertEquals(3 * plane, p.length, what + ": slice " + k + " length");
            for (int i = 0; i < p.length; i++) {
                int ch = i / plane, expected = u8[off + i] & 0xff;
                float f = p[i];
                if (f == table[ch * 256 + expected]) {
                    continue;
                }
                int got = nearest(table, ch, f);
                assertEquals(table[ch * 256 + got], f, 0.0f, what + ": slice " + k + " value " + f
                        + " is not (x/255 - mean)/std of a uint8");
                int d = Math.abs(got - expected);
                if (d > worst) {
                    worst = d;
                    where = "slice " + k + " channel " + ch + " pixel " + (i % plane) + ": " + got + " vs " + expected;
                }
            }
            off += p.length;
        }
        assertEquals(u8.length, off, what + ": total pixel values");
        synchronized (ImageFixturesTest.class) {
            maxLsb = Math.max(maxLsb, worst);
            pixelsCompared += off;
        }
        assertTrue(worst <= 1, what + ": " + worst + " LSB off at " + where + " (fixtures made with Pillow "
                + pillow + "; PillowResize follows Pillow 13.0's pass order)");
    }

    private static int nearest(float[] table, int ch, float f) {
        int best = 0;
        for (int u = 1; u < 256; u++) {
            if (Math.abs(table[ch * 256 + u] - f) < Math.abs(table[ch * 256 + best] - f)) {
                best = u;
            }
        }
        return best;
    }

    private static void checkResizes(File dir, JSONArray jobs) throws Exception {
        for (int k = 0; k < jobs.length(); k++) {
            JSONArray j = jobs.getJSONArray(k);
            int inW = j.getInt(0), inH = j.getInt(1), w = j.getInt(2), h = j.getInt(3);
            byte[] in = Files.readAllBytes(new File(dir, k + ".in").toPath());
            byte[] want = Files.readAllBytes(new File(dir, k + ".out").toPath());
            RgbImage got = PillowResize.resize(new RgbImage(inW, inH, in), w, h);
            assertEquals(w, got.width);
            assertEquals(h, got.height);
            for (int i = 0; i < want.length; i++) {
                if (want[i] != got.rgb[i]) {
                    fail(inW + "x" + inH + " -> " + w + "x" + h + ": byte " + i + " is " + (got.rgb[i] & 0xff)
                            + ", Pillow " + (want[i] & 0xff));
                }
            }
        }
    }

    private static void checkTable(float[] table, VisionSpec spec) {
        byte[] ramp = new byte[256 * 3];
        for (int u = 0; u < 256; u++) {
            ramp[3 * u] = ramp[3 * u + 1] = ramp[3 * u + 2] = (byte) u;
        }
        float[] got = ImageSlicer.normalize(new RgbImage(256, 1, ramp), 0, 0, 256, 1, spec);
        assertArrayEquals(table, got, 0.0f, "normalize() of 0..255");
    }

    private static void checkRefused(JSONArray refused) throws JSONException {
        for (int i = 0; i < refused.length(); i++) {
            JSONObject r = refused.getJSONObject(i);
            int w = r.getJSONArray("size").getInt(0), h = r.getJSONArray("size").getInt(1);
            try {
                ImageLimits.check(w, h);
                fail(w + "x" + h + " was accepted");
            } catch (ArtifactException e) {
                assertEquals(r.getString("message"), e.getMessage());
                assertEquals(ArtifactException.Kind.BAD_IMAGE, e.kind);
            }
        }
    }

    private static void checkSizes(JSONArray sizes, JSONObject visions) throws Exception {
        Iterator<?> it = visions.keys();
        while (it.hasNext()) {
            String v = (String) it.next();
            VisionSpec spec = VisionSpec.fromJson(visions.getJSONObject(v));
            for (int i = 0; i < sizes.length(); i++) {
                JSONObject row = sizes.getJSONObject(i);
                int[] size = {row.getJSONArray("size").getInt(0), row.getJSONArray("size").getInt(1)};
                String what = v + " " + size[0] + "x" + size[1];
                JSONObject e = row.getJSONObject(v);
                int[] grid = ImageSlicer.slicedGrid(size, spec.sliceSize, spec.maxSlices);
                int[] over = ImageSlicer.bestResize(size[0], size[1], spec.sliceSize, spec.patchSize, grid == null);
                assertArrayEquals(pair(e.getJSONArray("overview")), over, what + ": overview size");
                if (e.isNull("grid")) {
                    assertNull(grid, what + ": Python has no grid");
                    continue;
                }
                assertArrayEquals(pair(e.getJSONArray("grid")), grid, what + ": grid");
                assertArrayEquals(pair(e.getJSONArray("refine")),
                        ImageSlicer.refineSize(size, grid, spec.sliceSize, spec.patchSize), what + ": refine size");
            }
        }
    }

    private static void checkPositions(File pos, JSONArray shapes) throws Exception {
        for (int i = 0; i < shapes.length(); i++) {
            int h = shapes.getJSONArray(i).getInt(0), w = shapes.getJSONArray(i).getInt(1);
            String tag = h + "x" + w;
            assertClose(floats(new File(pos, "key16_" + tag + ".f32")), VisionInputs.keyPos(16, h, w), "key_pos " + tag);
            assertArrayEquals(longs(new File(pos, "ids70_" + tag + ".i64")), VisionInputs.bucketedIds(h, w, 70),
                    "position_ids " + tag);
            assertClose(floats(new File(pos, "rows27_" + tag + ".f32")), VisionInputs.aaBicubicMatrix(h, 27), "pos_rows " + tag);
            assertClose(floats(new File(pos, "cols27_" + tag + ".f32")), VisionInputs.aaBicubicMatrix(w, 27), "pos_cols " + tag);
        }
        assertClose(floats(new File(pos, "key2560_16x24.f32")), VisionInputs.keyPos(2560, 16, 24), "key_pos 2560");
        assertClose(floats(new File(pos, "key2304_9x31.f32")), VisionInputs.keyPos(2304, 9, 31), "key_pos 2304");
        long[] ids = longs(new File(pos, "ids_sweep.i64"));
        float[] aa = floats(new File(pos, "aa_sweep.f32"));
        int o = 0, oa = 0;
        for (int g : new int[] {27, 70}) {
            for (int n = 1; n <= 400; n++) {
                long[] got = VisionInputs.bucketedIds(n, 1, g);
                for (int r = 0; r < n; r++) {
                    assertEquals(ids[o + r], got[r], "bucketed_ids(" + n + ", 1, " + g + ")[" + r + "]");
                }
                o += n;
            }
            for (int n = 1; n <= 120; n++) {
                float[] got = VisionInputs.aaBicubicMatrix(n, g);
                float[] want = new float[got.length];
                System.arraycopy(aa, oa, want, 0, got.length);
                assertClose(want, got, "aa_bicubic_matrix(" + n + ", " + g + ")");
                oa += got.length;
            }
        }
        assertEquals(ids.length, o, "bucketed_ids sweep length");
        assertEquals(aa.length, oa, "aa_bicubic_matrix sweep length");
    }

    /** Equal within float32 rounding of a float64 value: one ulp of the larger magnitude. */
    private static void assertClose(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what + ": length");
        for (int i = 0; i < want.length; i++) {
            float tol = Math.max(Math.ulp(Math.abs(want[i])), Math.ulp(1e-7f));
            if (Math.abs(want[i] - got[i]) > tol) {
                fail(what + "[" + i + "]: " + got[i] + " vs " + want[i]);
            }
        }
    }

    private static int[] pair(JSONArray a) throws JSONException {
        return new int[] {a.getInt(0), a.getInt(1)};
    }

    private static List<Object> jsonList(JSONArray a) throws JSONException {
        List<Object> out = new ArrayList<Object>();
        for (int i = 0; i < a.length(); i++) {
            Object o = a.get(i);
            out.add(o instanceof Number ? (Object) Integer.valueOf(((Number) o).intValue()) : o);
        }
        return out;
    }

    private static ByteBuffer le(File f) throws IOException {
        return ByteBuffer.wrap(Files.readAllBytes(f.toPath())).order(ByteOrder.LITTLE_ENDIAN);
    }

    static int[] ints(File f) throws IOException {
        ByteBuffer b = le(f);
        int[] out = new int[b.remaining() / 4];
        b.asIntBuffer().get(out);
        return out;
    }

    static float[] floats(File f) throws IOException {
        ByteBuffer b = le(f);
        float[] out = new float[b.remaining() / 4];
        b.asFloatBuffer().get(out);
        return out;
    }

    static long[] longs(File f) throws IOException {
        ByteBuffer b = le(f);
        long[] out = new long[b.remaining() / 8];
        b.asLongBuffer().get(out);
        return out;
    }
}
