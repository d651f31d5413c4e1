package org.edgepack.demo.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;

import org.junit.jupiter.api.Test;

/** RgbImage and ImagePrompt on hand-made inputs (the fixtures hold them to Pillow and image.py at scale). */
class RgbImageTest {

    @Test
    void compositesAlphaOverWhiteAsPillow() {
        int[] argb = {0x00123456, 0xFF123456, 0x80000000, 0x010AC84D};
        RgbImage im = RgbImage.fromArgb(argb, 4, 1);
        // Image.alpha_composite(white, ...) gives (255,255,255), (18,52,86), (127,127,127), (254,255,254)
        assertArrayEquals(new byte[] {(byte) 255, (byte) 255, (byte) 255, 0x12, 0x34, 0x56, 127, 127, 127,
                (byte) 254, (byte) 255, (byte) 254}, im.rgb);
    }

    @Test
    void orientsAsExifTranspose() {
        // 3 wide, 2 high; pixel value = its index, in the red channel
        byte[] rgb = new byte[18];
        for (int i = 0; i < 6; i++) {
            rgb[3 * i] = (byte) i;
        }
        RgbImage im = new RgbImage(3, 2, rgb);
        int[][] want = {null, {0, 1, 2, 3, 4, 5}, {2, 1, 0, 5, 4, 3}, {5, 4, 3, 2, 1, 0}, {3, 4, 5, 0, 1, 2},
                {0, 3, 1, 4, 2, 5}, {3, 0, 4, 1, 5, 2}, {5, 2, 4, 1, 3, 0}, {2, 5, 1, 4, 0, 3}};
        for (int o = 1; o <= 8; o++) {
            RgbImage t = im.orient(o);
            assertEquals(o >= 5 ? 2 : 3, t.width, "width for " + o);
            int[] got = new int[6];
            for (int i = 0; i < 6; i++) {
                got[i] = t.rgb[3 * i];
            }
            assertArrayEquals(want[o], got, "orientation " + o);
        }
        assertEquals(im, im.orient(0));
        assertEquals(im, im.orient(9));
    }

    @Test
    void promptLayoutFor40And20() throws Exception {
        VisionSpec v4 = VisionSpec.fromJson(new org.json.JSONObject("{\"version\": \"4.0\", \"embed_dim\": 64, \"query_num\": 2}"));
        List<Object> p = ImagePrompt.parts(v4, new int[] {2, 2}, 1);
        assertEquals("[<image_id>1</image_id>, <image>, 0, </image>, <slice>, 1, </slice>, <slice>, 2, </slice>, \n, "
                + "<slice>, 3, </slice>, <slice>, 4, </slice>]", p.toString());
        assertEquals("<image_id>0</image_id><image><unk><unk></image>", ImagePrompt.text(v4, null, 0));
        VisionSpec v2 = VisionSpec.fromJson(new org.json.JSONObject(
                "{\"version\": \"2.0\", \"embed_dim\": 64, \"layout\": \"2.0\", \"use_image_id\": false, \"query_num\": 1}"));
        assertEquals("<image><unk></image><slice><image><unk></image>\n<image><unk></image></slice>",
                ImagePrompt.text(v2, new int[] {1, 2}, 0));
    }
}
