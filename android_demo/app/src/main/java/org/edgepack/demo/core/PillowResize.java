package org.edgepack.demo.core;

/**
 * Pillow's Image.resize(size, BICUBIC) on RGB888, bit for bit (libImaging/Resample.c): coefficients in
 * double (support 2·scale when shrinking), rounded to 22-bit fixed point per tap; a horizontal pass over
 * the rows the vertical pass needs, its output clipped to uint8, then a vertical pass, or the vertical pass
 * first when the height shrinks by more than twice as many pixels as the width (Pillow 13.0's rule; the
 * order changes the uint8 intermediate, so Pillow versions before it differ here by a few LSB). A pass
 * whose size does not change is skipped.
 */
final class PillowResize {

    private static final int PRECISION_BITS = 32 - 8 - 2;

    private PillowResize() {
    }

    /** Keys' bicubic convolution kernel, a = -0.5 (Pillow's bicubic_filter; PyTorch's aa cubic). */
    static double cubic(double x) {
        final double a = -0.5;
        if (x < 0.0) {
            x = -x;
        }
        if (x < 1.0) {
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        }
        if (x < 2.0) {
            return (((x - 5) * x + 8) * x - 4) * a;
        }
        return 0.0;
    }

    /** Taps of one axis: bounds {min, count} per output, fixed-point weights ksize per output. */
    static final class Coeffs {
        final int ksize;
        final int[] bounds;
        final int[] k;

        Coeffs(int inSize, int outSize) {
            double scale = (double) inSize / outSize;
            double filterscale = Math.max(scale, 1.0);
            double support = 2.0 * filterscale;
            ksize = (int) Math.ceil(support) * 2 + 1;
            bounds = new int[outSize * 2];
            k = new int[outSize * ksize];
            double inv = 1.0 / filterscale;
            double[] w = new double[ksize];
            for (int xx = 0; xx < outSize; xx++) {
                double center = (xx + 0.5) * scale;
                int xmin = Math.max((int) (center - support + 0.5), 0);
                int xmax = Math.min((int) (center + support + 0.5), inSize) - xmin;
                double ww = 0.0;
                for (int x = 0; x < xmax; x++) {
                    w[x] = cubic((x + xmin - center + 0.5) * inv);
                    ww += w[x];
                }
                for (int x = 0; x < xmax; x++) {
                    double v = ww != 0.0 ? w[x] / ww : w[x];
                    k[xx * ksize + x] = v < 0 ? (int) (-0.5 + v * (1 << PRECISION_BITS))
                            : (int) (0.5 + v * (1 << PRECISION_BITS));
                }
                bounds[2 * xx] = xmin;
                bounds[2 * xx + 1] = xmax;
            }
        }
    }

    private static int clip8(int ss) {
        int v = ss >> PRECISION_BITS;
        return v < 0 ? 0 : v > 255 ? 255 : v;
    }

    static RgbImage resize(RgbImage im, int outW, int outH) {
        if (outW == im.width && outH == im.height) {
            return new RgbImage(outW, outH, im.rgb.clone());
        }
        boolean needH = outW != im.width, needV = outH != im.height;
        if (!horizontalFirst(im.width, im.height, outW, outH)) {
            RgbImage v = needV ? vertical(im, outH, 0, im.height) : im;
            return needH ? horizontal(v, outW) : v;
        }
        if (!needH) {
            return vertical(im, outH, 0, im.height);
        }
        Coeffs cv = new Coeffs(im.height, outH);
        int first = cv.bounds[0];
        int last = cv.bounds[2 * outH - 2] + cv.bounds[2 * outH - 1];
        RgbImage h = horizontalRows(im, outW, first, last);
        return needV ? vertical(h, outH, first, im.height) : h;
    }

    /** Pillow 13.0's order (ImagingResampleInner): the vertical pass goes first when the height shrinks by
     *  more than twice as many pixels as the width does. Pillow up to 12.1 always went horizontal first;
     *  12.2 and 12.3 went vertical first only for images over 100 times taller than wide. */
    static boolean horizontalFirst(int inW, int inH, int outW, int outH) {
        return !(inH - outH > 0 && inH - outH > (inW - outW) * 2);
    }

    private static RgbImage horizontal(RgbImage im, int outW) {
        return horizontalRows(im, outW, 0, im.height);
    }

    /** Rows [first, last) of im resized to outW: an image of last - first rows. */
    private static RgbImage horizontalRows(RgbImage im, int outW, int first, int last) {
        Coeffs c = new Coeffs(im.width, outW);
        int rows = last - first, inRow = im.width * 3;
        byte[] in = im.rgb, out = new byte[rows * outW * 3];
        int half = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < rows; y++) {
            int lineIn = (y + first) * inRow, lineOut = y * outW * 3;
            for (int xx = 0; xx < outW; xx++) {
                int xmin = c.bounds[2 * xx], xmax = c.bounds[2 * xx + 1], ko = xx * c.ksize;
                int s0 = half, s1 = half, s2 = half;
                for (int x = 0; x < xmax; x++) {
                    int p = lineIn + (x + xmin) * 3, kx = c.k[ko + x];
                    s0 += (in[p] & 0xff) * kx;
                    s1 += (in[p + 1] & 0xff) * kx;
                    s2 += (in[p + 2] & 0xff) * kx;
                }
                out[lineOut + 3 * xx] = (byte) clip8(s0);
                out[lineOut + 3 * xx + 1] = (byte) clip8(s1);
                out[lineOut + 3 * xx + 2] = (byte) clip8(s2);
            }
        }
        return new RgbImage(outW, rows, out);
    }

    /** im holds source rows from `first` on (of a source `srcH` rows high); resized to outH rows. */
    private static RgbImage vertical(RgbImage im, int outH, int first, int srcH) {
        Coeffs c = new Coeffs(srcH, outH);
        int row = im.width * 3;
        byte[] in = im.rgb, out = new byte[outH * row];
        int half = 1 << (PRECISION_BITS - 1);
        int[] acc = new int[row];
        for (int yy = 0; yy < outH; yy++) {
            int ymin = c.bounds[2 * yy] - first, ymax = c.bounds[2 * yy + 1], ko = yy * c.ksize;
            java.util.Arrays.fill(acc, half);
            for (int y = 0; y < ymax; y++) {
                int ky = c.k[ko + y], p = (y + ymin) * row;
                for (int i = 0; i < row; i++) {
                    acc[i] += (in[p + i] & 0xff) * ky;
                }
            }
            int o = yy * row;
            for (int i = 0; i < row; i++) {
                out[o + i] = (byte) clip8(acc[i]);
            }
        }
        return new RgbImage(im.width, outH, out);
    }
}
