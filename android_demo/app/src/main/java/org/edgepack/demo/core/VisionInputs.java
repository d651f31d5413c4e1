package org.edgepack.demo.core;

/**
 * The position feeds of vision.onnx for one slice of h×w patches, as edgepack.runtime.onnx_vision
 * (OnnxImageEncoder.inputs) computes them with edgepack.model.image: key_pos (all versions),
 * position_ids (4.0, "bucketed") or pos_rows/pos_cols (2.0, "interpolated").
 */
public final class VisionInputs {

    private VisionInputs() {
    }

    /** Everything vision.onnx takes for one slice, named and shaped as the graph declares its inputs. */
    public static final class Feeds {
        public static final String PIXEL_VALUES = "pixel_values", KEY_POS = "key_pos",
                POSITION_IDS = "position_ids", POS_ROWS = "pos_rows", POS_COLS = "pos_cols";

        /** (1, 3, heightPx, widthPx): the slice as ImageSlicer gives it. */
        public final float[] pixelValues;
        public final long[] pixelShape;
        /** (h·w, embedDim). */
        public final float[] keyPos;
        public final long[] keyPosShape;
        /** (h·w) for "bucketed" (4.0), else null. */
        public final long[] positionIds;
        /** (h, positionGrid) and (w, positionGrid) for "interpolated" (2.0), else null. */
        public final float[] posRows, posCols;
        public final long[] posRowsShape, posColsShape;

        Feeds(float[] pixels, int heightPx, int widthPx, VisionSpec v) {
            int h = heightPx / v.patchSize, w = widthPx / v.patchSize;
            if (h * v.patchSize != heightPx || w * v.patchSize != widthPx || pixels.length != 3 * heightPx * widthPx) {
                throw new IllegalArgumentException("a slice of " + widthPx + "x" + heightPx + " px (" + pixels.length
                        + " values) is not whole " + v.patchSize + "-pixel patches");
            }
            pixelValues = pixels;
            pixelShape = new long[] {1, 3, heightPx, widthPx};
            keyPos = keyPos(v.embedDim, h, w);
            keyPosShape = new long[] {(long) h * w, v.embedDim};
            boolean bucketed = v.position.equals("bucketed");
            positionIds = bucketed ? bucketedIds(h, w, v.positionGrid) : null;
            posRows = bucketed ? null : aaBicubicMatrix(h, v.positionGrid);
            posCols = bucketed ? null : aaBicubicMatrix(w, v.positionGrid);
            posRowsShape = bucketed ? null : new long[] {h, v.positionGrid};
            posColsShape = bucketed ? null : new long[] {w, v.positionGrid};
        }
    }

    /** The feeds of slice k of s (0: the overview), as OnnxImageEncoder.inputs builds them. */
    public static Feeds feeds(ImageSlicer.Sliced s, int k, VisionSpec v) {
        return new Feeds(s.pixels[k], s.sizes[k][0], s.sizes[k][1], v);
    }

    /** sincos_2d: (h·w, dim) row-major; row r·w+c = [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)],
     *  ω_k = 10000^(-k/(dim/4)), in double then rounded to float. */
    public static float[] keyPos(int dim, int h, int w) {
        int q = dim / 4;
        double[] omega = new double[q];
        for (int k = 0; k < q; k++) {
            omega[k] = 1.0 / StrictMath.pow(10000.0, k / (dim / 4.0));
        }
        float[] out = new float[h * w * dim];
        for (int r = 0; r < h; r++) {
            for (int c = 0; c < w; c++) {
                int o = (r * w + c) * dim;
                for (int k = 0; k < q; k++) {
                    double a = c * omega[k], b = r * omega[k];
                    out[o + k] = (float) StrictMath.sin(a);
                    out[o + q + k] = (float) StrictMath.cos(a);
                    out[o + 2 * q + k] = (float) StrictMath.sin(b);
                    out[o + 3 * q + k] = (float) StrictMath.cos(b);
                }
            }
        }
        return out;
    }

    /** bucketed_ids: Idefics2's NaViT bucket of each patch in a grid×grid table, (h·w) row-major,
     *  in float32 arithmetic as numpy/torch do it. */
    public static long[] bucketedIds(int h, int w, int grid) {
        float[] bounds = new float[grid - 1];
        for (int i = 1; i < grid; i++) {
            bounds[i - 1] = (float) ((double) i / grid);
        }
        int[] bh = buckets(h, bounds), bw = buckets(w, bounds);
        long[] out = new long[h * w];
        for (int r = 0; r < h; r++) {
            for (int c = 0; c < w; c++) {
                out[r * w + c] = (long) bh[r] * grid + bw[c];
            }
        }
        return out;
    }

    private static int[] buckets(int n, float[] bounds) {
        float step = (float) (1.0 / n), cap = (float) (1 - 1e-6);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            float f = Math.min((float) i * step, cap);
            int lo = 0, hi = bounds.length;  // searchsorted(side="right"): how many bounds are <= f
            while (lo < hi) {
                int mid = (lo + hi) >>> 1;
                if (bounds[mid] <= f) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            out[i] = lo;
        }
        return out;
    }

    /** aa_bicubic_matrix: (nOut, nIn) row-major weights of PyTorch's antialiased bicubic resize along one
     *  axis (a = -0.5, kernel widened by the scale when shrinking, each row normalized). */
    public static float[] aaBicubicMatrix(int nOut, int nIn) {
        double scale = (double) nIn / nOut;
        double support = 2.0 * Math.max(scale, 1.0);
        double inv = 1.0 / Math.max(scale, 1.0);
        float[] m = new float[nOut * nIn];
        double[] ws = new double[nIn];
        for (int i = 0; i < nOut; i++) {
            double center = scale * (i + 0.5);
            int lo = Math.max((int) (center - support + 0.5), 0);
            int hi = Math.min((int) (center + support + 0.5), nIn);
            double tot = 0.0;
            for (int j = lo; j < hi; j++) {
                ws[j] = PillowResize.cubic((j - center + 0.5) * inv);
                tot += ws[j];
            }
            for (int j = lo; j < hi; j++) {
                m[i * nIn + j] = (float) (tot != 0.0 ? ws[j] / tot : 0.0);
            }
        }
        return m;
    }
}
