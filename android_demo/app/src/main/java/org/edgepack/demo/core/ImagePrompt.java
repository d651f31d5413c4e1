package org.edgepack.demo.core;

import java.util.ArrayList;
import java.util.List;

/**
 * The prompt text that stands for one image, as edgepack.model.image.placeholder_parts: String pieces
 * and Integer k (image embedding k, queryNum rows; 0 the overview, 1.. the slices row-major).
 * 4.0: [&lt;image_id&gt;N&lt;/image_id&gt;] &lt;image&gt;0&lt;/image&gt; then rows of &lt;slice&gt;k&lt;/slice&gt; joined by "\n";
 * 2.0: the rows of &lt;image&gt;k&lt;/image&gt; inside one &lt;slice&gt;...&lt;/slice&gt;.
 */
public final class ImagePrompt {

    public static final String IMAGE = "<image>", IMAGE_END = "</image>";
    public static final String SLICE = "<slice>", SLICE_END = "</slice>";
    public static final String IMAGE_ID = "<image_id>", IMAGE_ID_END = "</image_id>", UNK = "<unk>";

    private ImagePrompt() {
    }

    /** grid: {cols, rows} or null (overview only); index: the image's number in the prompt. */
    public static List<Object> parts(VisionSpec v, int[] grid, int index) {
        List<Object> parts = new ArrayList<Object>();
        if (v.useImageId) {
            parts.add(IMAGE_ID + index + IMAGE_ID_END);
        }
        add(parts, IMAGE, 0, IMAGE_END);
        if (grid == null) {
            return parts;
        }
        int cols = grid[0], rows = grid[1];
        boolean v2 = v.layout.equals("2.0");
        if (v2) {
            parts.add(SLICE);
        }
        for (int r = 0; r < rows; r++) {
            if (r > 0) {
                parts.add("\n");
            }
            for (int c = 0; c < cols; c++) {
                add(parts, v2 ? IMAGE : SLICE, 1 + r * cols + c, v2 ? IMAGE_END : SLICE_END);
            }
        }
        if (v2) {
            parts.add(SLICE_END);
        }
        return parts;
    }

    /** The processor's own placeholder string: each embedding as queryNum &lt;unk&gt;. */
    public static String text(VisionSpec v, int[] grid, int index) {
        StringBuilder sb = new StringBuilder();
        for (Object p : parts(v, grid, index)) {
            if (p instanceof String) {
                sb.append((String) p);
            } else {
                for (int i = 0; i < v.queryNum; i++) {
                    sb.append(UNK);
                }
            }
        }
        return sb.toString();
    }

    private static void add(List<Object> parts, String open, int k, String close) {
        parts.add(open);
        parts.add(Integer.valueOf(k));
        parts.add(close);
    }
}
