package org.edgepack.demo.core;

/**
 * MiniCPM-V's image slicing, as edgepack.model.image.slice_image (the processor's arithmetic:
 * find_best_resize, get_refine_size, get_sliced_grid; Pillow's bicubic resize; (x/255 - mean)/std).
 * An overview of ~sliceSize² pixels, plus, for an image larger than one slice, a cols×rows grid of slices
 * of the image resized so each cell is ~sliceSize² (at most maxSlices cells).
 */
public final class ImageSlicer {

    private ImageSlicer() {
    }

    public static final class Sliced {
        /** Per slice (3, h, w) channels first, normalized; the overview first, then the slices row-major. */
        public final float[][] pixels;
        /** Per slice {heightPx, widthPx}. */
        public final int[][] sizes;
        /** {cols, rows}, or null without slices. */
        public final int[] grid;

        Sliced(float[][] pixels, int[][] sizes, int[] grid) {
            this.pixels = pixels;
            this.sizes = sizes;
            this.grid = grid;
        }
    }

    public static Sliced slice(RgbImage im, VisionSpec v) {
        int[] size = {im.width, im.height};
        int s = v.sliceSize, p = v.patchSize;
        int[] grid = v.sliceMode ? slicedGrid(size, s, v.maxSlices) : null;
        if (grid == null) {
            int[] o = bestResize(size[0], size[1], s, p, true);
            RgbImage overview = PillowResize.resize(im, o[0], o[1]);
            return new Sliced(new float[][] {normalize(overview, 0, 0, o[0], o[1], v)},
                    new int[][] {{o[1], o[0]}}, null);
        }
        int cols = grid[0], rows = grid[1];
        float[][] pixels = new float[1 + cols * rows][];
        int[][] sizes = new int[1 + cols * rows][];
        int[] o = bestResize(size[0], size[1], s, p, false);
        pixels[0] = normalize(PillowResize.resize(im, o[0], o[1]), 0, 0, o[0], o[1], v);
        sizes[0] = new int[] {o[1], o[0]};
        int[] r = refineSize(size, grid, s, p);
        RgbImage refine = PillowResize.resize(im, r[0], r[1]);
        int cw = r[0] / cols, ch = r[1] / rows;
        for (int y = 0; y < rows; y++) {
            for (int x = 0; x < cols; x++) {
                int k = 1 + y * cols + x;
                pixels[k] = normalize(refine, x * cw, y * ch, cw, ch, v);
                sizes[k] = new int[] {ch, cw};
            }
        }
        return new Sliced(pixels, sizes, grid);
    }

    /** Python's round(length / patch) * patch (half to even), at least one patch. */
    static int ensureDivide(double length, int patch) {
        return (int) Math.max(Math.rint(length / patch) * patch, patch);
    }

    /** find_best_resize: {w, h}. */
    static int[] bestResize(double w, double h, int scale, int patch, boolean allowUpscale) {
        if (w * h > (double) scale * scale || allowUpscale) {
            double r = w / h;
            h = (int) (scale / Math.sqrt(r));
            w = (int) (h * r);
        }
        return new int[] {ensureDivide(w, patch), ensureDivide(h, patch)};
    }

    /** get_refine_size: {w, h} of the image the slices are cut from. */
    static int[] refineSize(int[] size, int[] grid, int scale, int patch) {
        int rw = ensureDivide(size[0], grid[0]), rh = ensureDivide(size[1], grid[1]);
        int[] b = bestResize((double) rw / grid[0], (double) rh / grid[1], scale, patch, true);
        return new int[] {b[0] * grid[0], b[1] * grid[1]};
    }

    /** get_sliced_grid: {cols, rows} or null, the cell count near area/scale² whose aspect is closest. */
    static int[] slicedGrid(int[] size, int scale, int maxSlices) {
        double logRatio = StrictMath.log((double) size[0] / size[1]);
        long area = (long) size[0] * size[1];
        int multiple = (int) Math.min((long) Math.ceil((double) area / ((long) scale * scale)), maxSlices);
        if (multiple <= 1) {
            return null;
        }
        int[] best = {1, 1};
        double err = Double.POSITIVE_INFINITY;
        for (int n = multiple - 1; n <= multiple + 1; n++) {
            if (n == 1 || n > maxSlices) {
                continue;
            }
            for (int m = 1; m <= n; m++) {
                if (n % m == 0) {
                    double e = Math.abs(logRatio - StrictMath.log((double) m / (n / m)));
                    if (e < err) {
                        best = new int[] {m, n / m};
                        err = e;
                    }
                }
            }
        }
        return best;
    }

    /** The (3, h, w) normalized crop at (x0, y0) of im: (x/255 - mean) / std in float32, as numpy. */
    static float[] normalize(RgbImage im, int x0, int y0, int w, int h, VisionSpec v) {
        float[] out = new float[3 * h * w];
        int plane = h * w;
        for (int y = 0; y < h; y++) {
            int src = ((y + y0) * im.width + x0) * 3;
            for (int x = 0; x < w; x++) {
                for (int c = 0; c < 3; c++) {
                    float a = (float) (im.rgb[src + 3 * x + c] & 0xff) / 255.0f;
                    out[c * plane + y * w + x] = (a - v.mean[c]) / v.std[c];
                }
            }
        }
        return out;
    }
}
